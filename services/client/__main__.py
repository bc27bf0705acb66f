"""One institution's client agent: `python -m fedsilo_services.client` (or `fedsilo client`).

Configured by FEDSILO_*: the site name, its dataset declarations, and the control plane.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import torch
from fedsilo.client.agent import ClientAgent, ControlPlane
from fedsilo.data import SiteConfig
from fedsilo.modelstore.client import ModelStoreClient
from fedsilo.rpc.channels import connect
from fedsilo.rpc.server import configure_logging, run_until_signalled, start_service
from fedsilo.settings import ServiceSettings
from fedsilo.v1 import registry_pb2_grpc, scheduler_pb2_grpc
from pydantic import Field


class ClientSettings(ServiceSettings):
    site: str = Field(..., description="this institution's site name")
    site_config: Path = Field(..., description="YAML declaring the site's datasets")
    registry_address: str
    scheduler_address: str
    modelstore_address: str
    torch_threads: int = Field(1, ge=1, description="CPU threads for local training")
    poll_s: float = Field(5.0, gt=0, description="long-poll for tasks")
    state_dir: Path = Field(Path(".fedsilo/client"), description="this site's privacy ledger")


def main() -> None:
    settings = ClientSettings()
    configure_logging(f"client:{settings.site}", settings.log_level)
    torch.set_num_threads(settings.torch_threads)
    config = SiteConfig.load(settings.site_config)
    if config.site != settings.site:
        raise SystemExit(
            f"site config {settings.site_config} is for site {config.site!r}, not {settings.site!r}"
        )
    agent = ClientAgent(
        config,
        ControlPlane(
            registry=registry_pb2_grpc.RegistryStub(connect(settings.registry_address)),
            scheduler=scheduler_pb2_grpc.SchedulerStub(connect(settings.scheduler_address)),
            models=ModelStoreClient(connect(settings.modelstore_address)),
        ),
        poll_s=settings.poll_s,
        state_dir=settings.state_dir,
    )

    def register(server: grpc.Server) -> list[str]:
        return ["fedsilo.v1.Client"]

    running = start_service(f"client-{settings.site}", settings, register)
    running.run_in_background(agent.run, "task-loop", join_timeout_s=settings.poll_s + 15)
    run_until_signalled(running, settings)


if __name__ == "__main__":
    main()
