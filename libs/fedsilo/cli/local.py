"""Commands that run processes on this machine: `fedsilo up`, `down`, `status` and `client`."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from fedsilo.cli.api import read_endpoints
from fedsilo.cli.console import console, print_json, table
from fedsilo.cli.up import PROCESSES_FILE, START_TIMEOUT_S
from fedsilo.rpc.healthcheck import check

STOP_TIMEOUT_S = 60.0


def add_local_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    up = commands.add_parser("up", help="start the control plane as local processes")
    up.add_argument("--state-dir", default=".fedsilo")
    up.add_argument("--aggregators", type=int, default=2)
    up.add_argument(
        "--detach", action="store_true", help="return once it is up; `fedsilo down` stops it"
    )
    up.add_argument("--json", action="store_true", help="machine-readable output")
    up.set_defaults(local=cmd_up)

    down = commands.add_parser("down", help="stop what `fedsilo up` started")
    down.add_argument("--state-dir", default=".fedsilo")
    down.add_argument("--json", action="store_true", help="machine-readable output")
    down.set_defaults(local=cmd_down)

    status = commands.add_parser("status", help="the control plane's processes and health")
    status.add_argument("--state-dir", default=".fedsilo")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(local=cmd_status)

    client = commands.add_parser(
        "client",
        help="run one institution's client agent",
        description="A site needs the registry's address, the platform CA and, the first "
        "time, its one-time token; it learns the other services' addresses from the registry.",
    )
    client.add_argument("--site", required=True)
    client.add_argument("--data", required=True, help="the site's dataset config (YAML)")
    client.add_argument("--registry", help="the registry's address the operator gave you")
    client.add_argument("--ca-cert", help="the platform CA certificate the operator gave you")
    client.add_argument("--token", help="the site's one-time enrollment token (first start)")
    client.add_argument("--state-dir", help="the site's certificate and privacy ledger")
    for service in ("scheduler", "modelstore", "keymanager"):
        client.add_argument(f"--{service}", help=f"override the {service} address discovered")
    client.add_argument(
        "--endpoints",
        default=".fedsilo/endpoints.json",
        help="defaults for --registry and --ca-cert on the machine that ran `fedsilo up`",
    )
    client.set_defaults(local=cmd_client)


def _alive(pid: int) -> bool:
    """Running, and a fedsilo process (a pid from an old file may belong to another now)."""
    try:
        os.kill(pid, 0)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ProcessLookupError):
        return False
    return b"fedsilo" in cmdline


def _read_processes(state_dir: Path) -> dict[str, Any] | None:
    path = state_dir / PROCESSES_FILE
    if not path.exists():
        return None
    return dict(json.loads(path.read_text()))


def _print_plane(record: dict[str, Any], endpoints: dict[str, str], as_json: bool) -> None:
    if as_json:
        print_json({"endpoints": endpoints, **record})
        return
    console.print(f"[bold green]fedsilo control plane is up[/] (pid {record['pid']})")
    for service in record["services"]:
        console.print(
            f"  {service['name']:<14} pid {service['pid']:<7} gRPC 127.0.0.1:"
            f"{service['grpc_port']:<6} metrics http://127.0.0.1:{service['metrics_port']}/metrics"
        )
    console.print(f"  operator API   {endpoints['api']}  (docs: {endpoints['api']}/docs)")
    console.print(
        f"sites are given: --registry {endpoints['registry_sites']}"
        + (f" --ca-cert {endpoints['ca_cert']}" if "ca_cert" in endpoints else "")
        + " and a token from `fedsilo site add NAME`"
    )


def cmd_up(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir).resolve()
    existing = _read_processes(state_dir)
    if existing is not None and _alive(int(existing["pid"])):
        console.print(
            f"[red]a control plane is already up in {state_dir} (pid {existing['pid']}); "
            "`fedsilo down` stops it"
        )
        return 1
    if args.detach:
        return _up_detached(args, state_dir)
    from fedsilo.cli.up import start_control_plane

    plane = start_control_plane(state_dir, aggregators=args.aggregators)
    _print_plane(plane.write_processes(), plane.endpoints(), args.json)
    if not args.json:
        console.print(f"endpoints written to {state_dir / 'endpoints.json'}; Ctrl-C stops")
    sys.stdout.flush()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            for service in plane.processes:
                if service.process.poll() is not None:
                    console.print(f"[red]{service.name} exited ({service.process.returncode})")
                    stop.set()
    except KeyboardInterrupt:
        pass
    codes = plane.stop()
    (state_dir / PROCESSES_FILE).unlink(missing_ok=True)
    console.print(f"stopped: {codes}")
    return 0 if not any(codes.values()) else 1


def _up_detached(args: argparse.Namespace, state_dir: Path) -> int:
    """Start `fedsilo up` in its own session, its output in STATE/run/up.log, and return once
    it has written which processes it started."""
    log_path = state_dir / "run" / "up.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    (state_dir / PROCESSES_FILE).unlink(missing_ok=True)
    command = [sys.executable, "-m", "fedsilo.cli.main", "up", "--state-dir", str(state_dir)]
    with log_path.open("wb") as log:
        child = subprocess.Popen(
            [*command, "--aggregators", str(args.aggregators)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + 4 * START_TIMEOUT_S
    while time.monotonic() < deadline:
        record = _read_processes(state_dir)
        if record is not None and record["pid"] == child.pid:
            _print_plane(record, read_endpoints(state_dir / "endpoints.json"), args.json)
            if not args.json:
                console.print(f"log: {log_path}; `fedsilo down` stops it")
            return 0
        if child.poll() is not None:
            console.print(f"[red]fedsilo up exited ({child.returncode}); see {log_path}")
            return 1
        time.sleep(0.1)
    child.terminate()
    console.print(f"[red]the control plane did not come up in time; see {log_path}")
    return 1


def _started(args: argparse.Namespace) -> tuple[Path, dict[str, Any] | None]:
    """The state folder, and what `fedsilo up` recorded there (None, said, when nothing)."""
    state_dir = Path(args.state_dir).resolve()
    record = _read_processes(state_dir)
    if record is None:
        console.print(f"no control plane started by `fedsilo up` in {state_dir}")
    return state_dir, record


def cmd_down(args: argparse.Namespace) -> int:
    state_dir, record = _started(args)
    if record is None:
        return 0
    pids = [int(record["pid"])] + [int(s["pid"]) for s in reversed(record["services"])]
    names = ["fedsilo up"] + [s["name"] for s in reversed(record["services"])]
    # `fedsilo up` stops its services itself, clients and workers first; what is left after
    # that (a killed `up`) is stopped here, one by one.
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
            _wait_gone(pid, STOP_TIMEOUT_S)
    stopped = {name: not _alive(pid) for name, pid in zip(names, pids, strict=True)}
    (state_dir / PROCESSES_FILE).unlink(missing_ok=True)
    if args.json:
        print_json({"stopped": stopped})
    else:
        console.print(f"stopped the control plane in {state_dir}: {', '.join(names[1:])}")
    return 0 if all(stopped.values()) else 1


def _wait_gone(pid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)


def cmd_status(args: argparse.Namespace) -> int:
    state_dir, record = _started(args)
    if record is None:
        return 1
    rows = []
    for service in record["services"]:
        running = _alive(int(service["pid"]))
        health = check(f"127.0.0.1:{service['health_port']}", 2.0) if running else "-"
        rows.append({**service, "running": running, "health": health})
    healthy = all(row["running"] and row["health"] == "SERVING" for row in rows)
    if args.json:
        print_json({"pid": record["pid"], "healthy": healthy, "services": rows})
    else:
        console.print(
            table(
                f"control plane in {state_dir} (fedsilo up: pid {record['pid']})",
                ("service", "pid", "running", "health", "gRPC", "metrics"),
                (
                    (
                        row["name"],
                        str(row["pid"]),
                        "yes" if row["running"] else "no",
                        row["health"],
                        f"127.0.0.1:{row['grpc_port']}",
                        f":{row['metrics_port']}/metrics",
                    )
                    for row in rows
                ),
            )
        )
    return 0 if healthy else 1


def cmd_client(args: argparse.Namespace) -> int:
    """Run one institution's agent in this process (the service's own entry point)."""
    endpoints = read_endpoints(Path(args.endpoints))
    registry = args.registry or endpoints.get("registry_sites")
    ca_cert = args.ca_cert or endpoints.get("ca_cert")
    if not registry:
        console.print(
            "[red]--registry: give the registry's address the operator gave you "
            f"(or run `fedsilo up` on this machine first: it writes {args.endpoints})"
        )
        return 2
    settings = {
        "FEDSILO_SITE": args.site,
        "FEDSILO_SITE_CONFIG": str(Path(args.data).resolve()),
        "FEDSILO_REGISTRY_ADDRESS": registry,
        "FEDSILO_TLS_CA": str(Path(ca_cert).resolve()) if ca_cert else None,
        "FEDSILO_ENROLLMENT_TOKEN": args.token,
        "FEDSILO_STATE_DIR": args.state_dir,
        "FEDSILO_SCHEDULER_ADDRESS": args.scheduler,
        "FEDSILO_MODELSTORE_ADDRESS": args.modelstore,
        "FEDSILO_KEYMANAGER_ADDRESS": args.keymanager,
    }
    os.environ.update({name: value for name, value in settings.items() if value})
    from fedsilo_services.client.__main__ import main as client_main

    client_main()
    return 0
