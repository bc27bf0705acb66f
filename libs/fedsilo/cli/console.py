"""What the command line prints: the shared console, tables, and following a job live."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedsilo.cli.api import OperatorApi

console = Console(soft_wrap=True)  # lines stay whole: commands and addresses get copied
TERMINAL_STATES = {"completed", "failed", "cancelled"}


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> Table:
    result = Table(title=title)
    for column in columns:
        result.add_column(column)
    for row in rows:
        result.add_row(*row)
    return result


def decline_line(decline: dict[str, Any]) -> str:
    again = " (may succeed if asked again)" if decline["transient"] else ""
    return escape(f"{decline['site']} declined: {decline['reason']}{again}")


def watch_job(
    api: OperatorApi, job_id: str, *, quiet: bool = False, poll_s: float = 0.5
) -> dict[str, Any]:
    """Follow a job to its end with a progress bar showing the job's primary test metric (its
    federated figure); each site's decline is printed as soon as the scheduler has it."""
    status = api.job(job_id)
    shown: set[tuple[int, str, str]] = set()
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "round {task.fields[round]}  {task.fields[phase]:<12} "
            "test {task.fields[metric]} {task.fields[value]}"
        ),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
        transient=False,
    ) as progress:
        bar = progress.add_task(
            job_id, total=status["rounds"], round=0, phase="", metric="", value="-"
        )
        while True:
            status = api.job(job_id)
            for decline in status.get("declines", []):
                key = (status["round"], decline["client_id"], decline["reason"])
                if key not in shown and not quiet:
                    progress.console.print(f"[yellow]round {key[0]}: {decline_line(decline)}")
                shown.add(key)
            done = [h for h in status["history"] if h["ended_at"] and h["round"] > 0]
            value = next(
                (
                    h["test_metric"]
                    for h in reversed(status["history"])
                    if h["test_metric"] is not None
                ),
                None,
            )
            progress.update(
                bar,
                completed=len(done),
                round=status["round"],
                phase=status["phase"],
                metric=status["metric"],
                value=fmt(value),
            )
            if status["state"] in TERMINAL_STATES:
                return status
            time.sleep(poll_s)


def rounds_table(status: dict[str, Any]) -> Table:
    return table(
        f"{status['job_id']} ({status['algorithm']}, {status['state']})",
        (
            "round",
            "participants",
            "dropped",
            f"test {status['metric']}",
            "mean test acc",
            "duration s",
        ),
        (
            (
                str(row["round"]),
                ", ".join(row["participants"]),
                ", ".join(row["dropped"]) or "-",
                fmt(row["test_metric"]),
                fmt(row["mean_test_accuracy"]),
                fmt(row["duration_s"], 2),
            )
            for row in status["history"]
        ),
    )


def print_job(status: dict[str, Any], events: int = 10) -> None:
    """A job's state line, its cause when it failed, its rounds, declines and last events."""
    console.print(
        f"[bold]{status['job_id']}[/] {status['state']}: round {status['round']}/"
        f"{status['rounds']} ({status['phase']})"
    )
    if status["error"]:
        console.print(f"[red]{status['state']}: {escape(status['error'])}")
    console.print(rounds_table(status))
    for decline in status.get("declines", []):
        console.print(f"[yellow]  {decline_line(decline)}")
    for event in status["events"][-events:]:
        console.print(
            escape(f"  round {event['round']} {event['kind']} {event['client_id']}: ")
            + escape(event["detail"])
        )
    if status.get("contributions"):
        print_contributions(status["contributions"])


def print_contributions(result: Mapping[str, Any]) -> None:
    """Per-site contribution scores (fedsilo.cli.contributions), highest first."""
    console.print(
        f"{result['metric']} on {result['validation']}: {result['empty_coalition']:.4f} before "
        f"round 1, {result['grand_coalition']:.4f} after the last ({result['rounds']} rounds)"
    )
    console.print(
        table(
            "contributions",
            ["site", "Shapley", "leave-one-out"],
            (
                (site, f"{value:+.4f}", f"{result['leave_one_out'].get(site, 0.0):+.4f}")
                for site, value in sorted(result["shapley"].items(), key=lambda kv: -kv[1])
            ),
        )
    )
