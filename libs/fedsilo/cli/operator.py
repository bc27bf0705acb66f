"""Operator commands over the scheduler's REST API: jobs, models, sites, audit logs."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

from rich.markup import escape

from fedsilo.cli.api import OperatorApi, read_endpoints
from fedsilo.cli.console import (
    console,
    print_job,
    print_json,
    rounds_table,
    table,
    watch_job,
)
from fedsilo.cli.contributions import cmd_job_contributions
from fedsilo.jobs import JobSpecError, load_job_spec

Handler = Callable[[argparse.Namespace, OperatorApi], int]


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
        print_json(status)
    else:
        console.print(f"submitted [bold]{status['job_id']}[/] ({status['state']})")
        if args.wait:
            console.print(rounds_table(status))
            if status["error"]:
                console.print(f"[red]{status['state']}: {escape(status['error'])}")
    return 0 if status["state"] in ("running", "completed") else 1


def cmd_job_list(args: argparse.Namespace, api: OperatorApi) -> int:
    jobs = api.list_jobs()
    if args.json:
        print_json(jobs)
        return 0
    columns = ("job", "name", "algorithm", "state", "round", "phase")
    console.print(
        table(
            "jobs",
            columns,
            (
                (
                    j["job_id"],
                    j["name"],
                    j["algorithm"],
                    j["state"],
                    f"{j['round']}/{j['rounds']}",
                    j["phase"],
                )
                for j in jobs
            ),
        )
    )
    return 0


def cmd_job_status(args: argparse.Namespace, api: OperatorApi) -> int:
    status = watch_job(api, args.job_id, quiet=args.json) if args.watch else api.job(args.job_id)
    if args.json:
        print_json(status)
    else:
        print_job(status)
    return 0


def cmd_job_exclude(args: argparse.Namespace, api: OperatorApi) -> int:
    status = api.exclude_site(args.job_id, args.site, args.reason)
    if args.json:
        print_json(status)
    else:
        console.print(
            f"site {args.site} excluded from job {args.job_id}'s rounds after round "
            f"{status['round']}: {args.reason}"
        )
    return 0


def cmd_job_cancel(args: argparse.Namespace, api: OperatorApi) -> int:
    status = api.cancel(args.job_id)
    if args.json:
        print_json(status)
    else:
        console.print(f"{status['job_id']} {status['state']}")
    return 0


def cmd_model_pull(args: argparse.Namespace, api: OperatorApi) -> int:
    """The global model as a standard PyTorch state dict, or safetensors."""
    import numpy as np
    import torch

    from fedsilo.learning import manifest_from_json, state_dict_from_flat

    record = api.model(args.job_id, args.round)
    weights = np.frombuffer(api.model_weights(args.job_id, args.round), dtype="<f4")
    entries = manifest_from_json(record["manifest"]["tensors"])
    state = state_dict_from_flat(entries, weights)
    output = Path(args.out)
    fmt = args.format or ("safetensors" if output.suffix == ".safetensors" else "torch")
    if fmt == "safetensors":
        from safetensors.torch import save_file

        metadata = {
            "job_id": str(record["job_id"]),
            "round": str(record["round"]),
            "version": str(record["version"]),
        }
        save_file({k: v.contiguous() for k, v in state.items()}, str(output), metadata)
        load = "safetensors.torch.load_file(...)"
    else:
        torch.save(state, output)
        load = "model.load_state_dict(torch.load(...))"
    if args.json:
        print_json({"output": str(output), "format": fmt, **record})
    else:
        console.print(
            f"wrote {output} ({fmt}): round {record['round']} of {record['job_id']}, "
            f"version {record['version'][:12]}, {weights.size} parameters (load with {load})"
        )
    return 0


def cmd_site_add(args: argparse.Namespace, api: OperatorApi) -> int:
    issued = api.add_site(args.name, ttl_s=args.ttl_hours * 3600)
    endpoints = read_endpoints()
    registry = endpoints.get("registry_sites", "REGISTRY")
    ca_cert = endpoints.get("ca_cert", "CA_CERT")
    if args.json:
        print_json({**issued, "registry": registry, "ca_cert": ca_cert})
        return 0
    console.print(
        f"enrollment token for site [bold]{issued['site']}[/] (one use, valid "
        f"{args.ttl_hours:g} h). Give the site's IT team the registry's address, the "
        f"platform CA and this token:\n{issued['token']}\n"
        f"At the site: fedsilo client --site {issued['site']} --data SITE.yaml "
        f"--registry {registry} --ca-cert {ca_cert} --token {issued['token']}"
    )
    return 0


def cmd_site_revoke(args: argparse.Namespace, api: OperatorApi) -> int:
    result = api.revoke_client(args.client_id, args.reason)
    if args.json:
        print_json(result)
    else:
        console.print(
            f"revoked {result['certificates_revoked']} certificate(s) of "
            f"{args.client_id}; it is refused from now on"
        )
    return 0


def cmd_site_list(args: argparse.Namespace, api: OperatorApi) -> int:
    clients = api.sites()
    if args.json:
        print_json(clients)
        return 0
    now = time.time()
    console.print(
        table(
            "sites",
            ("site", "client", "alive", "datasets", "last seen s ago"),
            (
                (
                    c["site"],
                    c["client_id"],
                    "yes" if c["alive"] else "no",
                    ", ".join(
                        f"{d['name']} ({d['num_train']}/{d['num_test']})"
                        for d in c["capabilities"].get("datasets", [])
                    ),
                    f"{now - c['last_seen']:.1f}",
                )
                for c in clients
            ),
        )
    )
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from fedsilo.audit import verify_audit_log

    results = [verify_audit_log(Path(path), args.expect_head) for path in args.files]
    if args.json:
        print_json(
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


def _site_check(args: argparse.Namespace) -> int:
    from fedsilo.cli.sitecheck import cmd_site_check

    return cmd_site_check(args)


def add_operator_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The job, model, site and audit command groups. Each command names its handler: an
    operator command (`operator=`) is given the REST API, a local one (`local=`) only args."""

    def group(name: str, help_text: str) -> argparse._SubParsersAction[argparse.ArgumentParser]:
        return commands.add_parser(name, help=help_text).add_subparsers(
            dest="action", required=True
        )

    def command(
        parent: argparse._SubParsersAction[argparse.ArgumentParser],
        name: str,
        help_text: str,
        handler: Handler,
    ) -> argparse.ArgumentParser:
        sub = parent.add_parser(name, help=help_text)
        sub.add_argument("--json", action="store_true", help="machine-readable output")
        sub.set_defaults(operator=handler)
        return sub

    job = group("job", "submit and follow jobs")
    submit = command(job, "submit", "submit a job spec (YAML/JSON)", cmd_job_submit)
    submit.add_argument("spec")
    submit.add_argument("--wait", action="store_true", help="follow the job to its end")
    command(job, "list", "all jobs with state and round", cmd_job_list)
    status = command(job, "status", "rounds, declines, events", cmd_job_status)
    status.add_argument("job_id")
    status.add_argument("--watch", action="store_true")
    command(job, "cancel", "stop a running job", cmd_job_cancel).add_argument("job_id")
    exclude = command(
        job, "exclude-site", "leave a site out of a job's future rounds (audited)", cmd_job_exclude
    )
    exclude.add_argument("job_id")
    exclude.add_argument("site")
    exclude.add_argument("--reason", default="excluded by the operator")
    contributions = command(
        job,
        "contributions",
        "each site's contribution (Shapley, leave-one-out) on a validation set; kept with the job",
        cmd_job_contributions,
    )
    contributions.add_argument("job_id")
    contributions.add_argument(
        "--validation", required=True, help="a site-style YAML declaring the validation data"
    )
    contributions.add_argument("--dataset", help="its dataset's name (default: the job's)")
    contributions.add_argument(
        "--permutations", type=int, default=50, help="for more than 8 sites: orders sampled"
    )

    model = group("model", "global models")
    pull = command(model, "pull", "save a global model (state dict)", cmd_model_pull)
    pull.add_argument("job_id")
    pull.add_argument("--round", type=int, default=-1, help="default: the latest")
    pull.add_argument("--out", "-o", "--output", dest="out", required=True, metavar="FILE")
    pull.add_argument(
        "--format",
        choices=("torch", "safetensors"),
        default=None,
        help="default: safetensors for a .safetensors file, else torch.save",
    )

    site = group("site", "institutions: add, list, revoke; check a site's config")
    add = command(site, "add", "a one-time enrollment token for a site", cmd_site_add)
    add.add_argument("name")
    add.add_argument("--ttl-hours", type=float, default=24.0)
    command(site, "list", "sites, their agents, liveness, datasets", cmd_site_list)
    revoke = command(site, "revoke", "revoke a client's certificates", cmd_site_revoke)
    revoke.add_argument("client_id")
    revoke.add_argument("--reason", default="revoked by the operator")
    check = site.add_parser(
        "check", help="what a site config yields (rows, columns, classes, problems), offline"
    )
    check.add_argument("--data", required=True, metavar="SITE.yaml", help="the site's config")
    check.add_argument("--job", default=None, help="check against this job spec's task")
    check.add_argument("--dataset", default=None, help="only this dataset")
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.set_defaults(local=_site_check)

    audit = group("audit", "audit logs")
    verify = audit.add_parser("verify", help="check the hash chain of audit logs")
    verify.add_argument("--json", action="store_true", help="machine-readable output")
    verify.add_argument("files", nargs="+", help="e.g. .fedsilo/audit/*.jsonl")
    verify.add_argument("--expect-head", default=None, help="head hash recorded elsewhere")
    verify.set_defaults(local=cmd_audit_verify)
