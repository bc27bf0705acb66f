"""A population of simulated client agents in one process, to load the control plane as many
sites would: each simulated site enrolls for real (a one-time token from the operator API, a
CSR, a certificate from the platform CA), holds its own mutual-TLS channels, heartbeats at the
registry's interval, long-polls the scheduler and answers tasks over the same RPCs as
`ClientAgent`, with synthetic updates and metrics instead of training. No torch and no data:
this tests the control plane only.

One asyncio loop serves them all (grpc.aio): a thousand long polls and heartbeat timers are
coroutines, not threads.

    python -m fedsilo.simulation.population      # configured by FEDSILO_*, see SimulationSettings
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import httpx

from fedsilo.rpc.server import configure_logging
from fedsilo.simulation.client import SimulatedClient
from fedsilo.simulation.sites import PlaneAddresses, PopulationStats, SimulationSettings

log = logging.getLogger("fedsilo.simulation")


class Population:
    """Every simulated site: enrolled together, then run until stopped."""

    def __init__(self, settings: SimulationSettings) -> None:
        self._settings = settings
        self.stats = PopulationStats(settings.clients)
        plane = PlaneAddresses(
            settings.registry_address,
            settings.registry_enroll_address,
            settings.scheduler_address,
            settings.modelstore_address,
            settings.tls_ca.read_bytes(),
        )
        self.clients = [
            SimulatedClient(
                site,
                plane,
                self.stats,
                poll_s=settings.poll_s,
                train_s=settings.train_s,
                seed=settings.seed * 1_000_003 + index,
            )
            for index, site in enumerate(settings.sites())
        ]

    async def run(self, stop: asyncio.Event, on_enrolled: Callable[[], None]) -> None:
        """Enroll every site, each starting its heartbeats and long polls at once, as a real
        agent does; call `on_enrolled` when all have; run until `stop` is set."""
        loops: list[asyncio.Task[None]] = []

        def start(client: SimulatedClient) -> None:
            loops.extend(
                asyncio.create_task(loop(stop)) for loop in (client.heartbeats, client.tasks)
            )

        await self._enroll_all(start)
        on_enrolled()
        reporter = asyncio.create_task(self._report(stop))
        await stop.wait()
        for task in [*loops, reporter]:
            task.cancel()
        await asyncio.gather(*loops, reporter, return_exceptions=True)
        await asyncio.gather(*(client.close() for client in self.clients))
        self.write_stats()

    async def _enroll_all(self, start: Callable[[SimulatedClient], None]) -> None:
        """Operator and sites as in production: a one-time token per site from the operator
        API, then each site's CSR enrollment; `enroll_concurrency` sites at a time."""
        settings = self._settings
        ca = ssl.create_default_context(cafile=str(settings.tls_ca))
        token = settings.operator_token_file.read_text().strip()
        slots = asyncio.Semaphore(settings.enroll_concurrency)
        began = time.perf_counter()
        async with httpx.AsyncClient(
            base_url=settings.api,
            verify=ca,
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
            limits=httpx.Limits(max_connections=settings.enroll_concurrency),
        ) as operator:

            async def enroll(client: SimulatedClient) -> None:
                async with slots:
                    try:
                        response = await operator.post(
                            "/v1/sites", json={"site": client.site.name, "ttl_s": 3600}
                        )
                        response.raise_for_status()
                        await client.enroll(str(response.json()["token"]))
                    except (grpc.RpcError, httpx.HTTPError) as error:
                        self.stats.failure("enroll", error)
                        return
                self.stats.enrolled += 1
                self.stats.heartbeat_interval_s = client.heartbeat_s
                start(client)

            await asyncio.gather(*(enroll(client) for client in self.clients))
        self.stats.enrollment_s = time.perf_counter() - began
        log.info(
            "%d of %d sites enrolled in %.1f s",
            self.stats.enrolled,
            len(self.clients),
            self.stats.enrollment_s,
        )

    async def _report(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.write_stats()
            await asyncio.sleep(self._settings.stats_interval_s)

    def write_stats(self) -> None:
        _write_json(self._settings.stats_file, self.stats.snapshot())


def _write_json(path: Path | None, payload: dict[str, Any]) -> None:
    if path is None:
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(path)  # readers never see a half-written file


async def simulate(settings: SimulationSettings) -> PopulationStats:
    """Enroll and run every site until SIGTERM or SIGINT; the ready file says when all have
    enrolled."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    population = Population(settings)

    def enrolled() -> None:
        population.write_stats()
        _write_json(
            settings.ready_file, {"service": "simulated-clients", **population.stats.snapshot()}
        )

    await population.run(stop, enrolled)
    return population.stats


def main() -> None:
    settings = SimulationSettings()
    configure_logging("simulated-clients", settings.log_level)
    stats = asyncio.run(simulate(settings))
    log.info("stopped: %s", json.dumps(stats.snapshot()["heartbeats"]))


if __name__ == "__main__":
    main()
