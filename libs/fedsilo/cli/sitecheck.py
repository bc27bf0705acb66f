"""`fedsilo site check`: what a site's config yields, read where the data is, without starting a
client or contacting anyone: rows, columns after encoding, classes or the target's range,
events, and the problems a job would be declined for."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from fedsilo.cli.console import console, print_json
from fedsilo.data import DatasetError, SiteConfig, SiteConfigError, load_tabular, resolve_task
from fedsilo.jobs import JobSpec, JobSpecError, load_job_spec


def check_dataset(config: SiteConfig, name: str, job: JobSpec | None) -> dict[str, Any]:
    """One dataset's report: what loading it for `job` (or for the task its label implies)
    gives, and its problems."""
    spec = config.dataset(name)
    report: dict[str, Any] = {
        "dataset": name,
        "path": str(spec.path),
        "format": spec.file_format,
        "label": spec.label.describe(),
        "problems": [],
        "warnings": [],
    }
    try:
        task = resolve_task(job or JobSpec(dataset=name), spec.label)
        data = load_tabular(spec, task)
    except (DatasetError, ValueError) as problem:
        report["problems"].append(str(problem))
        return report
    report.update(
        task=task.name,
        rows=data.num_train + data.num_test,
        dropped_rows=data.dropped_rows,
        train=data.num_train,
        test=data.num_test,
        columns=list(data.feature_names),
        num_columns=data.num_features,
        metrics=list(task.metrics),
        primary_metric=task.metric,
    )
    report.update(_targets(data.task.name, data.task.classes, data.y_train, data.y_test, report))
    return report


def _targets(
    task: str, classes: tuple[Any, ...], train: np.ndarray, test: np.ndarray, report: dict[str, Any]
) -> dict[str, Any]:
    warnings: list[str] = report["warnings"]
    if task in ("binary", "multiclass"):
        names = [str(c) for c in classes] or ["0", "1"]
        counts = {
            split: {names[i]: int((y == i).sum()) for i in range(len(names))}
            for split, y in (("train", train), ("test", test))
        }
        absent = [c for c, n in counts["test"].items() if n == 0]
        if absent:
            warnings.append(
                f"classes {', '.join(absent)} do not occur in the test split: AUC is undefined "
                "here (reported as null, with the reason)"
            )
        return {"classes": counts}
    if task == "regression":
        values = np.concatenate([train, test])
        return {
            "target": {
                "min": float(values.min()),
                "max": float(values.max()),
                "mean": float(values.mean()),
            }
        }
    events = {split: int(y[:, 1].sum()) for split, y in (("train", train), ("test", test))}
    if events["test"] == 0:
        warnings.append("no events in the test split: the C-index is undefined here")
    times = np.concatenate([train[:, 0], test[:, 0]])
    return {
        "events": events,
        "censored": int(len(train) + len(test) - sum(events.values())),
        "time": {"min": float(times.min()), "max": float(times.max())},
    }


def cmd_site_check(args: argparse.Namespace) -> int:
    try:
        config = SiteConfig.load(Path(args.data))
        job = load_job_spec(Path(args.job)) if args.job else None
    except (SiteConfigError, JobSpecError) as error:
        console.print(f"[red]error:[/] {error}")
        return 1
    names = [job.dataset] if job is not None else sorted(config.datasets)
    if args.dataset:
        names = [args.dataset]
    reports = []
    for name in names:
        if name not in config.datasets:
            reports.append(
                {
                    "dataset": name,
                    "problems": [f"site '{config.site}' declares no dataset '{name}'"],
                    "warnings": [],
                }
            )
            continue
        reports.append(check_dataset(config, name, job))
    if args.json:
        print_json({"site": config.site, "datasets": reports})
    else:
        for report in reports:
            _print_report(config.site, report)
    return 1 if any(report["problems"] for report in reports) else 0


def _print_report(site: str, report: dict[str, Any]) -> None:
    console.print(f"[bold]{site} / {report['dataset']}[/]  {report.get('path', '')}")
    if "rows" in report:
        console.print(
            f"  {report['format']}, label {report['label']}: task {report['task']}, "
            f"{report['rows']} rows ({report['dropped_rows']} dropped for missing values), "
            f"train {report['train']}, test {report['test']}"
        )
        console.print(
            f"  {report['num_columns']} columns after encoding: {', '.join(report['columns'])}"
        )
        for key in ("classes", "target", "events", "time"):
            if key in report:
                console.print(f"  {key}: {report[key]}")
        console.print(
            f"  metrics: {', '.join(report['metrics'])} (primary {report['primary_metric']})"
        )
    for warning in report["warnings"]:
        console.print(f"  [yellow]warning:[/] {warning}")
    for problem in report["problems"]:
        console.print(f"  [red]problem:[/] {problem}")
    if not report["problems"]:
        console.print("  [green]ok")
