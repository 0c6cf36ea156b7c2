"""``JMLSYNC_CONFIG``: the default of every command's ``--config``, set by the image and unit."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from jmlsync.cli import main
from jmlsync.cli.common import CONFIG_ENVVAR
from tests.conftest import write_config
from tests.unit.test_deploy import CONFIG_FILE, DOCKERFILE, UNIT, _final, _unit_directives

pytestmark = pytest.mark.timeout(60)


def _commands(group: click.Group, prefix: str = "jmlsync") -> Iterator[tuple[str, click.Command]]:
    for name, command in sorted(group.commands.items()):
        yield f"{prefix} {name}", command
        if isinstance(command, click.Group):
            yield from _commands(command, f"{prefix} {name}")


def _jmlsync(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("JMLSYNC_")}
    return subprocess.run(
        [sys.executable, "-m", "jmlsync", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**clean, **env},
        cwd=cwd,
        check=False,
    )


def test_every_command_with_a_config_reads_the_variable() -> None:
    with_config = []
    for name, command in _commands(main):
        for param in command.params:
            if param.name == "config_path":
                assert param.envvar == CONFIG_ENVVAR, name
                with_config.append(name)
    # serve, token generate, config check, status, queue list, ...: not a vacuous walk.
    assert {"jmlsync serve", "jmlsync config check", "jmlsync status"} <= set(with_config)
    assert len(with_config) >= 10


def test_the_variable_names_the_configuration(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    config = write_config(tmp_path / "etc")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    done = _jmlsync("config", "check", env={CONFIG_ENVVAR: str(config)}, cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{config}: OK")
    done = _jmlsync("status", "--format", "json", env={CONFIG_ENVVAR: str(config)}, cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "etc" / "state" / "jmlsync.db").exists()  # the configured store


def test_the_option_wins_over_the_variable(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    missing = tmp_path / "missing.toml"
    done = _jmlsync(
        "config", "check", "--config", str(config), env={CONFIG_ENVVAR: str(missing)}, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    done = _jmlsync("config", "check", env={CONFIG_ENVVAR: str(missing)}, cwd=tmp_path)
    assert done.returncode == 1
    assert str(missing) in done.stderr


def test_help_names_the_variable() -> None:
    help_text = CliRunner().invoke(main, ["status", "--help"]).output
    assert f"env var: {CONFIG_ENVVAR}" in help_text


def test_image_and_unit_set_the_variable() -> None:
    assert f"{CONFIG_ENVVAR}={CONFIG_FILE}" in " ".join(_final("ENV")).split()
    assert DOCKERFILE.is_file()
    environment = " ".join(_unit_directives(UNIT.read_text())[("Service", "Environment")])
    assert f"{CONFIG_ENVVAR}={CONFIG_FILE}" in environment.split()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[reconcile]\nschedule = "every day"\n', "reconcile.schedule: not a cron expression"),
        (
            '[[rules]]\ngroup = "g"\nuser_filter = "nope eq"\n'
            'grants = [{ target = "t", role = "r" }]\n',
            "rules[1].user_filter:",
        ),
    ],
)
def test_syntax_checks_come_from_the_caller(tmp_path: Path, text: str, message: str) -> None:
    """config does not import the scheduler or the SCIM parser: the cron and rule-filter
    checks are given by the composition root (what the CLI loads with)."""
    from jmlsync.config import ConfigError, load_settings
    from jmlsync.policy_config import load_checked_settings

    path = tmp_path / "jmlsync.toml"
    path.write_text('[targets.t]\nkind = "ledger"\npath = "l.db"\n' + text)
    load_settings(path, environ={})
    with pytest.raises(ConfigError) as caught:
        load_checked_settings(path, environ={})
    assert message in str(caught.value)
