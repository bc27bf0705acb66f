"""The `fedsilo` command line."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedsilo.cli.api import ApiError, OperatorApi, default_api
from fedsilo.jobs import JobSpecError, load_job_spec

console = Console()
TERMINAL_STATES = {"completed", "failed", "cancelled"}


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def watch_job(
    api: OperatorApi, job_id: str, *, quiet: bool = False, poll_s: float = 0.5
) -> dict[str, Any]:
    """Follow a job to its end with a progress bar showing the current mean test accuracy."""
    status = api.job(job_id)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "round {task.fields[round]}  {task.fields[phase]:<12} mean test acc {task.fields[acc]}"
        ),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
        transient=False,
    ) as progress:
        bar = progress.add_task(job_id, total=status["rounds"], round=0, phase="", acc="-")
        while True:
            status = api.job(job_id)
            done = [h for h in status["history"] if h["ended_at"] and h["round"] > 0]
            accuracy = next(
                (
                    h["mean_test_accuracy"]
                    for h in reversed(status["history"])
                    if h["mean_test_accuracy"] is not None
                ),
                None,
            )
            progress.update(
                bar,
                completed=len(done),
                round=status["round"],
                phase=status["phase"],
                acc=_fmt(accuracy),
            )
            if status["state"] in TERMINAL_STATES:
                return status
            time.sleep(poll_s)


def _rounds_table(status: dict[str, Any]) -> Table:
    table = Table(title=f"{status['job_id']} ({status['algorithm']}, {status['state']})")
    for column in ("round", "participants", "dropped", "mean test acc", "duration s"):
        table.add_column(column)
    for row in status["history"]:
        table.add_row(
            str(row["round"]),
            ", ".join(row["participants"]),
            ", ".join(row["dropped"]) or "-",
            _fmt(row["mean_test_accuracy"]),
            _fmt(row["duration_s"], 2),
        )
    return table


def cmd_job_submit(args: argparse.Namespace, api: OperatorApi) -> int:
    try:
        spec = load_job_spec(Path(args.spec))
    except JobSpecError as error:
        console.print(f"[red]{error}")
        return 2
    status = api.submit_job(json.loads(spec.to_json()))
    if args.wait:
        status = watch_job(api, status["job_id"], quiet=args.json)
    if args.json:
        _print_json(status)
    else:
        console.print(f"submitted [bold]{status['job_id']}[/] ({status['state']})")
        if args.wait:
            console.print(_rounds_table(status))
    return 0 if status["state"] in ("running", "completed") else 1


def cmd_job_list(args: argparse.Namespace, api: OperatorApi) -> int:
    jobs = api.list_jobs()
    if args.json:
        _print_json(jobs)
        return 0
    table = Table(title="jobs")
    for column in ("job", "name", "algorithm", "state", "round", "phase"):
        table.add_column(column)
    for job in jobs:
        table.add_row(
            job["job_id"],
            job["name"],
            job["algorithm"],
            job["state"],
            f"{job['round']}/{job['rounds']}",
            job["phase"],
        )
    console.print(table)
    return 0


def cmd_job_status(args: argparse.Namespace, api: OperatorApi) -> int:
    status = watch_job(api, args.job_id, quiet=args.json) if args.watch else api.job(args.job_id)
    if args.json:
        _print_json(status)
        return 0
    console.print(
        f"[bold]{status['job_id']}[/] {status['state']}: round {status['round']}/"
        f"{status['rounds']} ({status['phase']}) {status['error']}"
    )
    console.print(_rounds_table(status))
    for event in status["events"][-10:]:
        console.print(
            f"  round {event['round']} {event['kind']} {event['client_id']}: {event['detail']}"
        )
    return 0


def cmd_job_cancel(args: argparse.Namespace, api: OperatorApi) -> int:
    status = api.cancel(args.job_id)
    if args.json:
        _print_json(status)
    else:
        console.print(f"{status['job_id']} {status['state']}")
    return 0


def cmd_model_pull(args: argparse.Namespace, api: OperatorApi) -> int:
    import numpy as np
    import torch

    from fedsilo.learning import manifest_from_json, state_dict_from_flat

    record = api.model(args.job_id, args.round)
    weights = np.frombuffer(api.model_weights(args.job_id, args.round), dtype="<f4")
    entries = manifest_from_json(record["manifest"]["tensors"])
    state = state_dict_from_flat(entries, weights)
    torch.save(state, args.output)
    if args.json:
        _print_json({"output": args.output, **record})
    else:
        console.print(
            f"wrote {args.output}: round {record['round']} of {record['job_id']}, "
            f"version {record['version'][:12]}, {weights.size} parameters "
            f"(load with model.load_state_dict(torch.load(...)))"
        )
    return 0


def cmd_site_add(args: argparse.Namespace, api: OperatorApi) -> int:
    issued = api.add_site(args.name, ttl_s=args.ttl_hours * 3600)
    if args.json:
        _print_json(issued)
    else:
        console.print(
            f"enrollment token for site [bold]{issued['site']}[/] (one use, valid "
            f"{args.ttl_hours:g} h) — give it to the site's IT team:\n{issued['token']}"
        )
    return 0


def cmd_client_revoke(args: argparse.Namespace, api: OperatorApi) -> int:
    result = api.revoke_client(args.client_id, args.reason)
    if args.json:
        _print_json(result)
    else:
        console.print(
            f"revoked {result['certificates_revoked']} certificate(s) of "
            f"{args.client_id}; it is refused from now on"
        )
    return 0


def cmd_sites_list(args: argparse.Namespace, api: OperatorApi) -> int:
    clients = api.sites()
    if args.json:
        _print_json(clients)
        return 0
    table = Table(title="sites")
    for column in ("site", "client", "alive", "datasets", "last seen s ago"):
        table.add_column(column)
    now = time.time()
    for client in clients:
        datasets = ", ".join(
            f"{d['name']} ({d['num_train']}/{d['num_test']})"
            for d in client["capabilities"].get("datasets", [])
        )
        table.add_row(
            client["site"],
            client["client_id"],
            "yes" if client["alive"] else "no",
            datasets,
            f"{now - client['last_seen']:.1f}",
        )
    console.print(table)
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from fedsilo.cli.up import start_control_plane

    plane = start_control_plane(Path(args.state_dir), aggregators=args.aggregators)
    endpoints = plane.endpoints()
    console.print("[bold green]fedsilo control plane is up[/]")
    for service in plane.processes:
        console.print(
            f"  {service.name:<14} pid {service.pid:<7} gRPC {service.grpc_address:<17}"
            f" metrics {service.metrics_url}"
        )
    console.print(f"  operator API   {endpoints['api']}  (docs: {endpoints['api']}/docs)")
    console.print(f"endpoints written to {plane.state_dir / 'endpoints.json'}; Ctrl-C stops")
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
    console.print(f"stopped: {codes}")
    return 0 if not any(codes.values()) else 1


def cmd_client(args: argparse.Namespace) -> int:
    """Run one institution's agent in this process (the service's own entry point)."""
    endpoints: dict[str, str] = {}
    if Path(args.endpoints).exists():
        endpoints = json.loads(Path(args.endpoints).read_text())
    settings = {
        "FEDSILO_SITE": args.site,
        "FEDSILO_SITE_CONFIG": str(Path(args.data).resolve()),
        "FEDSILO_REGISTRY_ADDRESS": args.registry or endpoints.get("registry", ""),
        "FEDSILO_SCHEDULER_ADDRESS": args.scheduler or endpoints.get("scheduler", ""),
        "FEDSILO_MODELSTORE_ADDRESS": args.modelstore or endpoints.get("modelstore", ""),
    }
    optional = {
        "FEDSILO_REGISTRY_ENROLL_ADDRESS": args.registry_enroll or endpoints.get("registry_enroll"),
        "FEDSILO_TLS_CA": args.ca_cert or endpoints.get("ca_cert"),
        "FEDSILO_ENROLLMENT_TOKEN": args.token,
    }
    os.environ.update({name: value for name, value in optional.items() if value})
    missing = [name for name, value in settings.items() if not value]
    if missing:
        console.print(
            f"[red]missing {', '.join(missing)}: pass --registry/--scheduler/"
            f"--modelstore or run `fedsilo up` first (it writes {args.endpoints})"
        )
        return 2
    os.environ.update(settings)
    from fedsilo_services.client.__main__ import main as client_main

    client_main()
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from fedsilo.audit import verify_audit_log

    results = [verify_audit_log(Path(path), args.expect_head) for path in args.files]
    if args.json:
        _print_json(
            [
                {
                    "path": str(r.path),
                    "ok": r.ok,
                    "entries": r.entries,
                    "head": r.head,
                    "problem": r.problem,
                }
                for r in results
            ]
        )
    else:
        for result in results:
            console.print(("[green]" if result.ok else "[red]") + result.describe())
    return 0 if all(result.ok for result in results) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedsilo", description=__doc__)
    parser.add_argument(
        "--api",
        default=None,
        help="operator API URL (default: FEDSILO_API, "
        "the endpoints file of `fedsilo up`, or http://127.0.0.1:8080)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def with_json(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument("--json", action="store_true", help="machine-readable output")
        return sub

    up = commands.add_parser("up", help="start the control plane as local processes")
    up.add_argument("--state-dir", default=".fedsilo")
    up.add_argument("--aggregators", type=int, default=2)

    client = commands.add_parser("client", help="run one institution's client agent")
    client.add_argument("--site", required=True)
    client.add_argument("--data", required=True, help="the site's dataset config (YAML)")
    client.add_argument("--registry")
    client.add_argument("--scheduler")
    client.add_argument("--modelstore")
    client.add_argument("--registry-enroll", help="the registry's enrollment port (host:port)")
    client.add_argument("--ca-cert", help="the platform CA certificate the operator gave you")
    client.add_argument("--token", help="the site's one-time enrollment token (first start)")
    client.add_argument("--endpoints", default=".fedsilo/endpoints.json")

    from fedsilo.cli.demo import add_demo_arguments

    add_demo_arguments(commands.add_parser("demo", help="run the heart-disease federation"))

    job = commands.add_parser("job", help="submit and follow jobs").add_subparsers(
        dest="action", required=True
    )
    submit = with_json(job.add_parser("submit", help="submit a job spec (YAML/JSON)"))
    submit.add_argument("spec")
    submit.add_argument("--wait", action="store_true", help="follow the job to its end")
    with_json(job.add_parser("list"))
    status = with_json(job.add_parser("status"))
    status.add_argument("job_id")
    status.add_argument("--watch", action="store_true")
    cancel = with_json(job.add_parser("cancel"))
    cancel.add_argument("job_id")

    model = commands.add_parser("model", help="global models").add_subparsers(
        dest="action", required=True
    )
    pull = with_json(model.add_parser("pull", help="save a global model as a PyTorch state dict"))
    pull.add_argument("job_id")
    pull.add_argument("--round", type=int, default=-1, help="default: the latest")
    pull.add_argument("-o", "--output", required=True)

    audit = commands.add_parser("audit", help="audit logs").add_subparsers(
        dest="action", required=True
    )
    verify = with_json(audit.add_parser("verify", help="check the hash chain of audit logs"))
    verify.add_argument("files", nargs="+", help="e.g. .fedsilo/audit/*.jsonl")
    verify.add_argument("--expect-head", default=None, help="head hash recorded elsewhere")

    site = commands.add_parser("site", help="add a site, revoke a client").add_subparsers(
        dest="action", required=True
    )
    add = with_json(site.add_parser("add", help="a one-time enrollment token for a site"))
    add.add_argument("name")
    add.add_argument("--ttl-hours", type=float, default=24.0)
    revoke = with_json(site.add_parser("revoke", help="revoke a client's certificates"))
    revoke.add_argument("client_id")
    revoke.add_argument("--reason", default="revoked by the operator")

    sites = commands.add_parser("sites", help="institutions").add_subparsers(
        dest="action", required=True
    )
    with_json(sites.add_parser("list"))
    return parser


HANDLERS = {
    ("job", "submit"): cmd_job_submit,
    ("job", "list"): cmd_job_list,
    ("job", "status"): cmd_job_status,
    ("job", "cancel"): cmd_job_cancel,
    ("model", "pull"): cmd_model_pull,
    ("sites", "list"): cmd_sites_list,
    ("site", "add"): cmd_site_add,
    ("site", "revoke"): cmd_client_revoke,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "up":
            return cmd_up(args)
        if args.command == "client":
            return cmd_client(args)
        if args.command == "audit":
            return cmd_audit_verify(args)
        if args.command == "demo":
            from fedsilo.cli.demo import run_demo

            return run_demo(args)
        api = default_api(args.api)
        return HANDLERS[(args.command, args.action)](args, api)
    except ApiError as error:
        console.print(f"[red]error:[/] {error}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
