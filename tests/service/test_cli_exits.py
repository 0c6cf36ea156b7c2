"""Exit codes every command keeps: 64 for usage errors, 1 with one line for any other error,
and warnings for ``--user`` names the directory does not hold."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from jmlsync.cli.common import Commands
from tests.service.test_reconcile_cli import World, world  # noqa: F401  (the fixture)


@pytest.mark.parametrize(
    "args",
    [
        ["reconcile", "--dry-run", "--detailed-exitcode", "--max-revocations", "-1"],
        ["reconcile", "--format", "yaml"],
        ["sla-report", "--format", "pdf"],
        ["explain"],
        ["no-such-command"],
        ["queue"],
        ["queue", "retry"],
        ["queue", "retry", "7", "--all-failed"],
        ["db", "copy", "--from", "mysql://x", "--to", "sqlite:///y"],
    ],
)
def test_usage_errors_exit_64_not_2(args: list[str], world: World) -> None:  # noqa: F811
    code, _, err = world.run(*args)
    assert code == 64, err
    assert "Error:" in err
    assert "Traceback" not in err


def test_reconcile_warns_about_an_unknown_user(world: World) -> None:  # noqa: F811
    code, out, err = world.run(
        "reconcile", "--dry-run", "--detailed-exitcode", "--user", "ghost@x.io"
    )
    assert code == 0, err
    assert "Nothing to do" in out
    assert "warning: user 'ghost@x.io' is not in the directory" in err
    code, out, err = world.run("reconcile", "--dry-run", "--format", "json", "--user", "ghost@x.io")
    assert json.loads(out)["unknown_users"] == ["ghost@x.io"]
    # A known user, spelled in another case, is not unknown.
    code, out, err = world.run("reconcile", "--dry-run", "--format", "json", "--user", "BOB@x.io")
    assert json.loads(out)["unknown_users"] == []
    assert "warning" not in err


def test_explain_of_an_unknown_user_warns_and_exits_1(world: World) -> None:  # noqa: F811
    code, out, err = world.run("explain", "--user", "nobody@x.io")
    assert code == 1
    assert "not in the directory" in out
    assert "jmlsync: warning: user 'nobody@x.io' is not in the directory" in err
    code, _, err = world.run("explain", "--user", "bob@x.io")
    assert (code, err) == (0, "")


def _failing_group() -> click.Group:
    @click.group(cls=Commands)
    def root() -> None:
        """A group whose command fails unexpectedly."""

    @root.command()
    def boom() -> None:
        raise ExceptionGroup("unhandled errors", [KeyError("kaput")])

    return root


def test_an_unexpected_error_is_one_line_and_exit_1() -> None:
    result = CliRunner().invoke(_failing_group(), ["boom"])
    assert result.exit_code == 1
    assert result.stderr == (
        "jmlsync: unexpected error: KeyError: 'kaput' (--debug shows the traceback)\n"
    )
    assert isinstance(result.exception, SystemExit)


def test_debug_shows_the_traceback() -> None:
    result = CliRunner().invoke(_failing_group(), ["--debug", "boom"])
    assert result.exit_code == 1
    assert "Traceback" in result.stderr
    assert result.stderr.endswith("jmlsync: unexpected error: KeyError: 'kaput'\n")
