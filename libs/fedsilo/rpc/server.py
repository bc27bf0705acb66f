"""Service start-up: gRPC server, health checking, /metrics, readiness file, graceful stop.

On SIGTERM (or SIGINT) the health status turns NOT_SERVING first, so load balancers and
probes stop sending traffic, then in-flight RPCs get `grace_s` to finish.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import start_http_server

from fedsilo.rpc.channels import CHANNEL_OPTIONS
from fedsilo.rpc.interceptors import MetricsInterceptor
from fedsilo.rpc.tls import TlsConfig
from fedsilo.settings import ServiceSettings

log = logging.getLogger("fedsilo.rpc")

Registrar = Callable[[grpc.Server], Sequence[str]]


def configure_logging(service: str, level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format=f"%(asctime)s {service}[%(process)d] %(levelname)s %(name)s: %(message)s",
    )


@dataclass
class RunningService:
    """A started service: its bound ports and the means to stop it."""

    name: str
    server: grpc.Server
    health: health.HealthServicer
    grpc_port: int
    metrics_port: int
    health_port: int
    http_port: int | None = None
    extra_ports: dict[str, int] = field(default_factory=dict)
    stopped: threading.Event = field(default_factory=threading.Event)
    _before_drain: list[Callable[[], None]] = field(default_factory=list)
    _after_drain: list[Callable[[], None]] = field(default_factory=list)

    def add_stop_hook(self, hook: Callable[[], None], *, before_drain: bool = False) -> None:
        """Hooks run after in-flight RPCs finish; `before_drain` ones (waking long polls,
        stopping background loops) run first so that draining does not wait on them."""
        (self._before_drain if before_drain else self._after_drain).append(hook)

    def run_in_background(
        self, target: Callable[[threading.Event], None], name: str, join_timeout_s: float
    ) -> None:
        """Run a service's work loop (task polling, shard leasing) beside the gRPC server; on
        stop it is told to finish before in-flight calls are drained."""
        stop = threading.Event()
        loop = threading.Thread(target=target, args=(stop,), name=name, daemon=True)
        loop.start()

        def stop_loop() -> None:
            stop.set()
            loop.join(timeout=join_timeout_s)

        self.add_stop_hook(stop_loop, before_drain=True)

    def write_ready_file(self, path: Path | None) -> None:
        if path is None:
            return
        payload = {
            "service": self.name,
            "pid": os.getpid(),
            "grpc_port": self.grpc_port,
            "metrics_port": self.metrics_port,
            "health_port": self.health_port,
            "http_port": self.http_port,
            **self.extra_ports,
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload))
        tmp.replace(path)  # readers never see a half-written file

    def stop(self, grace_s: float) -> None:
        if self.stopped.is_set():
            return
        log.info("%s stopping: NOT_SERVING, %.1fs grace for in-flight calls", self.name, grace_s)
        self.health.enter_graceful_shutdown()
        for hook in self._before_drain:
            hook()
        self.server.stop(grace_s).wait()
        for hook in self._after_drain:
            hook()
        self.stopped.set()


def start_service(
    name: str,
    settings: ServiceSettings,
    register: Registrar,
    *,
    tls: TlsConfig | None,
    extra_ports: dict[str, tuple[int, grpc.ServerCredentials]] | None = None,
) -> RunningService:
    """Start gRPC (mutual TLS unless `tls` is None), a plaintext health port for probes and
    the metrics endpoint; returns once all listen. `extra_ports` adds named listeners with
    other credentials (the registry's enrollment port)."""
    metrics_server, _ = start_http_server(settings.metrics_port, addr=settings.metrics_host)
    metrics_port = int(metrics_server.server_port)

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.max_workers, thread_name_prefix=name),
        interceptors=[MetricsInterceptor(name)],
        options=CHANNEL_OPTIONS[:2],
    )
    service_names = list(register(server))
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    address = f"{settings.grpc_host}:{settings.grpc_port}"
    grpc_port = (
        server.add_secure_port(address, tls.server_credentials())
        if tls is not None
        else server.add_insecure_port(address)
    )
    if grpc_port == 0:
        raise OSError(f"{name}: cannot bind gRPC on {address}")
    bound_extra = {}
    for port_name, (port, credentials) in (extra_ports or {}).items():
        bound_extra[port_name] = server.add_secure_port(f"{settings.grpc_host}:{port}", credentials)
    # Kubelet's gRPC probes speak plaintext: health alone gets its own port.
    health_server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, health_server)
    health_port = health_server.add_insecure_port(f"{settings.metrics_host}:{settings.health_port}")
    server.start()
    health_server.start()
    for service_name in ["", *service_names]:
        health_servicer.set(service_name, health_pb2.HealthCheckResponse.SERVING)
    running = RunningService(
        name, server, health_servicer, grpc_port, metrics_port, health_port, extra_ports=bound_extra
    )
    running.add_stop_hook(lambda: health_server.stop(0))
    # Recorded in the service log, so a truncated audit file is caught by comparing heads.
    log.info(
        "%s audit log %s, head %s",
        name,
        settings.audit_dir / f"{name}.jsonl",
        settings.audit_log(name).head(),
    )
    running.add_stop_hook(metrics_server.shutdown)
    log.info(
        "%s serving gRPC (%s) on %s:%d, metrics on :%d",
        name,
        "mutual TLS"
        if tls is not None
        else "plaintext, health checks only"
        if not service_names
        else "PLAINTEXT, no identities",
        settings.grpc_host,
        grpc_port,
        metrics_port,
    )
    return running


def run_until_signalled(running: RunningService, settings: ServiceSettings) -> None:
    """Block until SIGTERM/SIGINT, then stop gracefully."""
    requested = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("%s received %s", running.name, signal.Signals(signum).name)
        requested.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    running.write_ready_file(settings.ready_file)
    while not requested.wait(timeout=1.0):
        pass
    running.stop(settings.grace_s)
    log.info("%s stopped", running.name)
