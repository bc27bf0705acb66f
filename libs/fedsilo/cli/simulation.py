"""A simulated population beside a local control plane: one more process holding many client
agents (fedsilo.simulation). The control-plane benchmark and its scaled-down
integration test start it, and the job it serves, the same way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedsilo.cli.processes import ServiceProcess, spawn
from fedsilo.cli.up import LocalControlPlane
from fedsilo.federations import heart_disease

POPULATION = "simulated-clients"


def start_population(
    plane: LocalControlPlane, clients: int, *, timeout_s: float, **settings: str
) -> ServiceProcess:
    """Spawn `clients` simulated sites and wait until all have enrolled (each with its own
    one-time token and certificate). `settings` are further FEDSILO_* variables."""
    if plane.trust is None:
        raise ValueError("simulated sites enroll with tokens and certificates: start with TLS")
    run_dir = plane.state_dir / "run"
    endpoints = plane.endpoints()
    # The population is a load generator, not a site: it is handed every address rather than
    # discovering them once per simulated site.
    env = {
        "FEDSILO_REGISTRY_ADDRESS": endpoints["registry"],
        "FEDSILO_REGISTRY_ENROLL_ADDRESS": endpoints["registry_enroll"],
        "FEDSILO_SCHEDULER_ADDRESS": endpoints["scheduler"],
        "FEDSILO_MODELSTORE_ADDRESS": endpoints["modelstore"],
        "FEDSILO_TLS_CA": endpoints["ca_cert"],
        "FEDSILO_API": plane.api_url,
        "FEDSILO_OPERATOR_TOKEN_FILE": str(plane.trust.operator_token_file),
        "FEDSILO_CLIENTS": str(clients),
        "FEDSILO_STATS_FILE": str(run_dir / f"{POPULATION}.stats.json"),
        **settings,
    }
    process = spawn(POPULATION, "fedsilo.simulation.population", env, run_dir)
    plane.processes.append(process)  # stopped first, before the services it talks to
    process.wait_ready(timeout_s)
    return process


def population_stats(population: ServiceProcess) -> dict[str, Any]:
    """The population's counts as last written (final once it has stopped)."""
    return dict(json.loads(Path(population.env["FEDSILO_STATS_FILE"]).read_text()))


def stop_population(population: ServiceProcess, timeout_s: float = 30.0) -> dict[str, Any]:
    population.terminate()
    population.wait_stopped(timeout_s)
    return population_stats(population)


def load_job(per_round: int, rounds: int, **overrides: Any) -> dict[str, Any]:
    """A job that exercises the control plane, not training: the heart-disease logistic
    regression (14 parameters), plain updates, every selected site needed for quorum."""
    return {
        "name": f"control-plane-{per_round}x{rounds}",
        "dataset": heart_disease.DATASET,
        "rounds": rounds,
        "clients_per_round": per_round,
        "min_clients": per_round,
        "local_steps": 1,
        "protection": "none",
        "round_timeout_s": 120.0,
        "evaluation_timeout_s": 120.0,
        **overrides,
    }
