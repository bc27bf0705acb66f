"""One institution's client agent: `python -m fedsilo_services.client` (or `fedsilo client`).

Configured by FEDSILO_*: the site name, its dataset declarations, and the registry's address
(with the platform CA and, the first time, the site's token); the other services' addresses
come from the registry.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from pydantic import Field

from fedsilo.client.enrollment import (
    EnrollmentError,
    IdentityFiles,
    SiteConnection,
    enroll_with_token,
    join_control_plane,
)
from fedsilo.data import SiteConfig
from fedsilo.modelstore.client import ModelStoreClient
from fedsilo.rpc.channels import connect
from fedsilo.rpc.server import configure_logging, run_until_signalled, start_service
from fedsilo.settings import ServiceSettings
from fedsilo.v1 import keymanager_pb2_grpc, registry_pb2_grpc, scheduler_pb2_grpc

if TYPE_CHECKING:
    from fedsilo.client.agent import ClientAgent


class ClientSettings(ServiceSettings):
    site: str = Field(..., description="this institution's site name")
    site_config: Path = Field(..., description="YAML declaring the site's datasets")
    data_dir: Path | None = Field(
        None, description="relative dataset paths resolve here (default: the config's folder)"
    )
    registry_address: str = Field(
        ...,
        description="the registry's address for sites, as the operator gave it (with TLS its "
        "enrollment port); every other address is learned from it",
    )
    scheduler_address: str | None = Field(None, description="override of the discovered one")
    modelstore_address: str | None = Field(None, description="override of the discovered one")
    keymanager_address: str | None = Field(None, description="override of the discovered one")
    torch_threads: int = Field(1, ge=1, description="CPU threads for local training")
    poll_s: float = Field(5.0, gt=0, description="long-poll for tasks")
    state_dir: Path = Field(Path(".fedsilo/client"), description="identity, privacy ledger")
    enrollment_token: str | None = Field(None, description="the site's one-time token")

    def overrides(self) -> dict[str, str | None]:
        return {
            "scheduler": self.scheduler_address,
            "modelstore": self.modelstore_address,
            "keymanager": self.keymanager_address,
        }


def connect_site(settings: ClientSettings, config: SiteConfig) -> SiteConnection:
    """This site's certificate (the stored one, or a new one from the enrollment token) and
    the control plane's addresses, learned from the registry."""
    from fedsilo.client.site import SiteDatasets, describe_site

    if settings.insecure:
        return join_control_plane(settings.registry_address, settings.overrides())
    if settings.tls_ca is None:
        raise SystemExit(
            "set FEDSILO_TLS_CA to the platform CA certificate the operator gave "
            "you (or FEDSILO_INSECURE=true for a plaintext experiment)"
        )
    ca_pem = settings.tls_ca.read_bytes()
    files = IdentityFiles(settings.state_dir / settings.site / "identity")

    def enroll() -> None:
        if not settings.enrollment_token:
            raise EnrollmentError(
                "first start of this site: set FEDSILO_ENROLLMENT_TOKEN (from "
                "`fedsilo site add`; `fedsilo client --token`)"
            )
        capabilities = describe_site(config, SiteDatasets(config).describe)
        enroll_with_token(
            files,
            settings.site,
            settings.enrollment_token,
            ca_pem,
            settings.registry_address,
            capabilities,
        )

    return join_control_plane(
        settings.registry_address,
        settings.overrides(),
        identity=files,
        ca_pem=ca_pem,
        enroll=enroll,
    )


def main(agent_type: type[ClientAgent] | None = None) -> None:
    """Run a site's agent until signalled; `agent_type` (a ClientAgent subclass) replaces
    the agent for harnesses that play a misbehaving site (bench/adversary.py)."""
    # Here, not at the top: worker processes (Paillier randomness) import this module to
    # start, and need neither torch nor the agent.
    import torch

    from fedsilo.client.agent import ClientAgent, ControlPlane

    settings = ClientSettings()
    configure_logging(f"client:{settings.site}", settings.log_level)
    torch.set_num_threads(settings.torch_threads)
    config = SiteConfig.load(settings.site_config, settings.data_dir)
    if config.site != settings.site:
        raise SystemExit(
            f"site config {settings.site_config} is for site {config.site!r}, not {settings.site!r}"
        )
    try:
        site = connect_site(settings, config)
    except EnrollmentError as error:
        raise SystemExit(str(error)) from None
    tls, endpoints = site.tls, site.endpoints
    agent = (agent_type or ClientAgent)(
        config,
        ControlPlane(
            registry=registry_pb2_grpc.RegistryStub(connect(endpoints["registry"], tls)),
            scheduler=scheduler_pb2_grpc.SchedulerStub(connect(endpoints["scheduler"], tls)),
            models=ModelStoreClient(connect(endpoints["modelstore"], tls)),
            keymanager=keymanager_pb2_grpc.KeyManagerStub(connect(endpoints["keymanager"], tls)),
        ),
        poll_s=settings.poll_s,
        state_dir=settings.state_dir,
    )

    def register(server: grpc.Server) -> list[str]:
        return []

    # The agent only calls out; its own port serves health checks, on localhost by default.
    running = start_service(f"client-{settings.site}", settings, register, tls=None)
    running.run_in_background(agent.run, "task-loop", join_timeout_s=settings.poll_s + 15)
    run_until_signalled(running, settings)


if __name__ == "__main__":
    main()
