"""Every `fedsilo ...` command the README shows parses against the CLI, so that a renamed
command or flag fails the suite instead of a new user's first try.

Command lines come from the README's shell blocks (`fedsilo ...` or `.venv/bin/fedsilo ...`,
with `\\` continuations and trailing comments), its inline code and tables, and `make demo
ARGS='...'` (which runs `fedsilo demo ARGS`). A line with arguments must parse as given
(placeholders like TOKEN stand for any value); a bare command path (`fedsilo job status` in a
sentence) must name an existing command."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from fedsilo.cli.main import build_parser

README = Path(__file__).resolve().parents[2] / "README.md"
_COMMAND = re.compile(r"^(?:\.venv/bin/)?fedsilo(?:\s+(.*))?$")
_INLINE = re.compile(r"`((?:\.venv/bin/)?fedsilo(?:\s[^`]*)?)`")
_MAKE_DEMO = re.compile(r"make demo ARGS='([^']*)'")
_PLACEHOLDER = re.compile(r"^[A-Z][A-Z_]*(\.\.\.)?$")


def readme_commands(text: str) -> list[str]:
    """Each command line as the argument string after `fedsilo`."""
    commands: list[str] = []
    in_shell = False
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("```"):
            in_shell = line in ("```sh", "```bash", "```shell")
            continue
        if in_shell:
            line = pending + line
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            pending = ""
            command = re.sub(r"\s+#.*$", "", line)
            if match := _COMMAND.match(command):
                commands.append(match.group(1) or "")
        else:
            commands += [
                _COMMAND.match(span).group(1) or ""  # type: ignore[union-attr]
                for span in _INLINE.findall(raw)
            ]
        commands += [f"demo {args}" for args in _MAKE_DEMO.findall(raw)]
    return commands


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def check_command(parser: argparse.ArgumentParser, arguments: str) -> None:
    """AssertionError naming the command and argparse's complaint, if it does not parse."""
    tokens = [
        "1" if _PLACEHOLDER.match(token) else token  # TOKEN, N, FILE...: any value fits "1"
        for token in shlex.split(arguments.replace("[", " ").replace("]", " "))
    ]
    if not tokens:
        return  # the command itself, named in a sentence
    node, path = parser, []
    for token in tokens:
        children = _subcommands(node)
        if token not in children:
            break
        node, path = children[token], [*path, token]
    if len(path) == len(tokens) and path and not _subcommands(node):
        return  # a reference to a command, without its arguments
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            parser.parse_args(tokens)
    except SystemExit:
        raise AssertionError(
            f"`fedsilo {arguments}` does not parse: {errors.getvalue().strip()}"
        ) from None


COMMANDS = readme_commands(README.read_text())


def test_the_readme_shows_the_commands_a_new_user_runs() -> None:
    heads = {" ".join(shlex.split(c)[:2]) for c in COMMANDS if c}
    for head in ("up --detach", "site add", "job submit", "status", "down"):
        assert any(h.startswith(head) for h in heads), f"the README never shows `fedsilo {head}`"
    assert len(COMMANDS) >= 25


@pytest.mark.parametrize("arguments", COMMANDS)
def test_every_readme_command_parses(arguments: str) -> None:
    check_command(build_parser(), arguments)


@pytest.mark.parametrize(
    "arguments",
    ["sites list", "client --site a --data a.yaml --registry-enroll x:1", "model pull j -x f"],
)
def test_a_renamed_command_or_flag_is_caught(arguments: str) -> None:
    with pytest.raises(AssertionError, match="does not parse"):
        check_command(build_parser(), arguments)
