"""Every command, found by walking the live click tree, ends with an exit code from the
documented set and a one-line message: never a traceback, never click's 2 for a usage error.

A command group added later is walked too, with nothing to add here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from jmlsync.cli import main
from tests.conftest import write_config

#: A scim target on a closed port (nothing listens on the discard port), tried once.
BROKEN = """
[pipeline]
call_attempts = 1

[targets.gone]
kind = "scim"
url = "http://127.0.0.1:9/v2"
token_file = "tokens"

[[rules]]
group = "engineering"
grants = [{ target = "gone", role = "developers" }]
"""

#: The one command that does not return: it is walked only with bad input.
LONG_RUNNING = {("serve",)}


def _leaves(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name in sorted(group.commands):
        command = group.commands[name]
        if isinstance(command, click.Group):
            yield from _leaves(command, (*path, name))
        else:
            yield (*path, name)


COMMANDS = list(_leaves(main))


def _command(path: tuple[str, ...]) -> click.Command:
    command: click.Command = main
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return command


def _filler(param: click.Parameter) -> str:
    if isinstance(param.type, click.types.IntParamType):
        return "1"
    if isinstance(param.type, click.Choice):
        return str(param.type.choices[0])
    if param.name and "user" in param.name:
        return "nobody@example.com"
    if param.name == "request_id":
        return "1"  # a well-formed id, so the command goes on to read its configuration
    return "x"


def _required(command: click.Command, *, skip: set[str] | None = None) -> list[str]:
    """The arguments a command cannot run without, filled with plausible values."""
    args: list[str] = []
    for param in command.params:
        if not param.required or param.name in (skip or set()):
            continue
        if isinstance(param, click.Option):
            args += [param.opts[0], _filler(param)]
        else:
            args.append(_filler(param))
    return args


def _has(command: click.Command, name: str) -> bool:
    return any(param.name == name for param in command.params)


def _invoke(path: tuple[str, ...], args: list[str]) -> Result:
    return CliRunner().invoke(main, [*path, *args])


def _assert_clean(result: Result, allowed: set[int]) -> None:
    output = result.stdout + result.stderr
    assert result.exit_code in allowed, output
    assert "Traceback" not in output
    # CliRunner catches what would have been a traceback: nothing but SystemExit may escape.
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    if result.exit_code == 1:
        # click's own "Aborted!" (a confirmation prompt without an answer) is one line too.
        errors = [
            line
            for line in result.stderr.splitlines()
            if line.startswith("jmlsync:") or line == "Aborted!"
        ]
        assert errors, output
        assert "unexpected error" not in result.stderr, result.stderr


def test_the_walk_finds_every_group() -> None:
    groups = {path[0] for path in COMMANDS if len(path) > 1}
    assert {"queue", "audit", "config", "db", "alerts", "token"} <= groups
    assert ("reconcile",) in COMMANDS
    assert ("sla-report",) in COMMANDS


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_usage_errors_exit_64(path: tuple[str, ...]) -> None:
    result = _invoke(path, ["--no-such-option"])
    assert result.exit_code == 64, result.output
    assert "No such option" in result.stderr


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_help_exits_0(path: tuple[str, ...]) -> None:
    result = _invoke(path, ["--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.stdout


@pytest.mark.parametrize(
    "path", [p for p in COMMANDS if _has(_command(p), "config_path")], ids=" ".join
)
def test_a_missing_configuration_is_one_line(path: tuple[str, ...], tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "jmlsync.toml"
    result = _invoke(path, [*_required(_command(path)), "--config", str(missing)])
    _assert_clean(result, {1, 64})
    if result.exit_code == 1:
        assert str(missing) in result.stderr


@pytest.mark.timeout(120)
@pytest.mark.parametrize("path", [p for p in COMMANDS if p not in LONG_RUNNING], ids=" ".join)
def test_a_broken_target_is_one_line(path: tuple[str, ...], tmp_path: Path) -> None:
    config = write_config(tmp_path, extra=BROKEN)
    command = _command(path)
    args = _required(command)
    if _has(command, "config_path"):
        args += ["--config", str(config)]
    _assert_clean(_invoke(path, args), {0, 1, 2, 3, 64})


def _options_of(kind: str) -> list[tuple[tuple[str, ...], str]]:
    found = []
    for path in COMMANDS:
        for param in _command(path).params:
            if not isinstance(param, click.Option) or param.name == "config_path":
                continue
            is_path = isinstance(param.type, click.Path)
            is_date = isinstance(param.type, click.DateTime) or param.name in {"since", "until"}
            if (kind == "path" and is_path) or (kind == "date" and is_date):
                found.append((path, param.opts[0]))
    return found


def test_there_are_dates_and_paths_to_walk() -> None:
    assert (("sla-report",), "--since") in _options_of("date")
    assert (("sla-report",), "--output") in _options_of("path")


@pytest.mark.parametrize(("path", "option"), _options_of("date"), ids=str)
def test_a_bad_date_is_one_line(path: tuple[str, ...], option: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, extra=BROKEN)
    command = _command(path)
    args = [*_required(command, skip={option.lstrip("-").replace("-", "_")}), option, "soon"]
    if _has(command, "config_path"):
        args += ["--config", str(config)]
    result = _invoke(path, args)
    _assert_clean(result, {1, 64})
    assert option in result.stderr


@pytest.mark.parametrize(("path", "option"), _options_of("path"), ids=str)
def test_a_bad_path_is_one_line(path: tuple[str, ...], option: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, extra=BROKEN)
    command = _command(path)
    bad = tmp_path / "no-such-directory" / "file"
    args = [*_required(command, skip={option.lstrip("-").replace("-", "_")}), option, str(bad)]
    if _has(command, "config_path"):
        args += ["--config", str(config)]
    result = _invoke(path, args)
    _assert_clean(result, {1, 64})
    assert "no-such-directory" in result.stderr
