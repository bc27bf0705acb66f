"""Running a reference federation on this machine: its data folder, the control plane with one
client per site (each reading only its own file, holding its own policy), and a job run to
its end."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fedsilo.cli.api import OperatorApi
from fedsilo.cli.console import console, watch_job
from fedsilo.cli.up import LocalControlPlane, start_control_plane
from fedsilo.federations import Federation, heart_disease
from fedsilo.jobs import JobSpec
from fedsilo.policy import SitePolicy

REPO = Path(__file__).resolve().parents[3]
# Where data that ships in a package is written for the sites to read.
EXAMPLE_DATA = Path(".fedsilo") / "example-data"


def find_data_dir(explicit: str | None, federation: Federation = heart_disease.FEDERATION) -> Path:
    """--data-dir, the federation's environment variable, or shared/data beside the working
    folder or the repository; data that ships in a package is written on first use to
    .fedsilo/example-data/<name>."""
    candidates = [explicit, os.environ.get(federation.data_env)]
    candidates += [
        str(Path.cwd() / "../shared/data" / federation.data_folder),
        str(REPO / "../shared/data" / federation.data_folder),
    ]
    if federation.prepare is not None:
        candidates.append(str(Path.cwd() / EXAMPLE_DATA / federation.data_folder))
    for candidate in candidates:
        if candidate and (Path(candidate) / federation.marker).exists():
            return Path(candidate).resolve()
    if federation.prepare is not None:
        folder = Path(explicit) if explicit else Path.cwd() / EXAMPLE_DATA / federation.data_folder
        federation.prepare(folder)
        return folder.resolve()
    raise SystemExit(
        f"{federation.name} data not found: pass --data-dir or set {federation.data_env} to the "
        f"folder with {federation.marker}"
    )


def start_sites(
    state_dir: Path,
    data_dir: Path,
    federation: Federation = heart_disease.FEDERATION,
    *,
    aggregators: int = 2,
    policies: Mapping[str, SitePolicy] | None = None,
    **plane_options: Any,
) -> LocalControlPlane:
    """The control plane plus one client per site of `federation`."""
    shutil.rmtree(state_dir, ignore_errors=True)
    plane = start_control_plane(state_dir, aggregators=aggregators, **plane_options)
    try:
        sites_dir = state_dir / "sites"
        sites_dir.mkdir(parents=True, exist_ok=True)
        for site in federation.sites:
            config_path = sites_dir / f"{site}.yaml"
            config = federation.site_config(site, data_dir)
            if policies and site in policies:
                config = config.model_copy(update={"policy": policies[site]})
            config.write(config_path)
            plane.start_client(site, config_path)
        plane.wait_ready()
        wait_for_sites(plane.api(), len(federation.sites))
    except BaseException:
        plane.stop()
        raise
    return plane


def start_heart_federation(
    state_dir: Path,
    data_dir: Path,
    *,
    aggregators: int = 2,
    policies: Mapping[str, SitePolicy] | None = None,
    **plane_options: Any,
) -> LocalControlPlane:
    return start_sites(
        state_dir,
        data_dir,
        heart_disease.FEDERATION,
        aggregators=aggregators,
        policies=policies,
        **plane_options,
    )


def wait_for_sites(api: OperatorApi, count: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sum(site["alive"] for site in api.sites()) >= count:
            return
        time.sleep(0.2)
    raise TimeoutError(f"{count} sites did not enroll within {timeout_s:.0f}s")


def run_federation(
    data_dir: Path,
    spec: JobSpec,
    out: Path,
    federation: Federation = heart_disease.FEDERATION,
    *,
    aggregators: int = 2,
    quiet: bool = False,
) -> dict[str, Any]:
    """Start everything, run the job, fetch its final model, stop everything; returns the job
    status, the final weights (a float32 vector) and the processes."""
    started = time.perf_counter()
    plane = start_sites(out / "state", data_dir, federation, aggregators=aggregators)
    weights = None
    try:
        if not quiet:
            console.print(
                f"started {len(plane.processes)} processes; operator API {plane.api_url}/docs"
            )
        api = plane.api()
        submitted = api.submit_job(json.loads(spec.to_json()))
        status = watch_job(api, submitted["job_id"], quiet=quiet)
        if status["model_version"]:
            weights = np.frombuffer(api.model_weights(submitted["job_id"]), dtype="<f4").copy()
        processes: list[dict[str, Any]] = [
            {"service": p.name, "pid": p.pid} for p in plane.processes
        ]
    finally:
        codes = plane.stop()
    for process in processes:
        process["exit_code"] = codes.get(process["service"])
    return {
        "status": status,
        "weights": weights,
        "processes": processes,
        "wall_s": time.perf_counter() - started,
        "state_dir": str(plane.state_dir),
    }
