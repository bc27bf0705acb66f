"""The `fedsilo` command line."""

from __future__ import annotations

import argparse
import sys

from fedsilo.cli.api import ApiError, default_api
from fedsilo.cli.console import console
from fedsilo.cli.local import add_local_commands
from fedsilo.cli.operator import add_operator_commands


def _run_demo(args: argparse.Namespace) -> int:
    from fedsilo.cli.demo import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedsilo", description=__doc__)
    parser.add_argument(
        "--api",
        default=None,
        help="operator API URL (default: FEDSILO_API, "
        "the endpoints file of `fedsilo up`, or https://127.0.0.1:8080)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    add_local_commands(commands)
    from fedsilo.cli.demo import add_demo_arguments

    demo = commands.add_parser("demo", help="run the heart-disease federation")
    add_demo_arguments(demo)
    demo.set_defaults(local=_run_demo)
    add_operator_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "operator", None) is not None:
            return int(args.operator(args, default_api(args.api)))
        return int(args.local(args))
    except ApiError as error:
        console.print(f"[red]error:[/] {error}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
