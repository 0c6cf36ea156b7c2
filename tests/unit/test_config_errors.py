"""Configuration errors name the key or the environment variable, and suggest the near miss."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from jmlsync.cli import main
from jmlsync.config import ConfigError, load_settings
from tests.conftest import write_config


def _error(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ or {})
    lines = str(caught.value).splitlines()
    assert lines[0] == f"{path}: invalid configuration"
    return lines[1:]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            '[server]\nlistne = "127.0.0.1:1"\n',
            "  server.listne: unknown key (did you mean listen?)",
        ),
        ("[servr]\n", "  servr: unknown key (did you mean server?)"),
        (
            '[targets.a]\nkind = "ledger"\npth = "x"\n',
            "  targets.a.pth: unknown key (did you mean path?)",
        ),
        (
            '[[rules]]\ngroup = "g"\ngrants = [{ target = "a", rloe = "x" }]\n',
            "  rules[1].grants[1].rloe: unknown key (did you mean role?)",
        ),
        ("[server]\nzzz = 1\n", "  server.zzz: unknown key"),
    ],
)
def test_a_misspelt_key_gets_a_suggestion(tmp_path: Path, text: str, line: str) -> None:
    path = tmp_path / "jmlsync.toml"
    path.write_text(text)
    assert line in _error(path)


def test_a_misspelt_kind_and_choice_get_a_suggestion(tmp_path: Path) -> None:
    path = tmp_path / "jmlsync.toml"
    path.write_text('[reconcile]\ndrift = "remidiate"\n[targets.a]\nkind = "ledgr"\npath = "x"\n')
    lines = _error(path)
    assert any(
        line.startswith("  targets.a.kind: unknown kind 'ledgr' (did you mean ledger?)")
        for line in lines
    ), lines
    assert any(
        line.startswith("  reconcile.drift:") and line.endswith("(did you mean remediate?)")
        for line in lines
    ), lines


def test_an_environment_variable_is_named(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    lines = _error(path, {"JMLSYNC_SERVER__LISTN": "0.0.0.0:1", "JMLSYNC_CONFIG": str(path)})
    assert lines == [
        "  unknown key: environment variable JMLSYNC_SERVER__LISTN"
        " (did you mean JMLSYNC_SERVER__LISTEN?)"
    ]
    lines = _error(path, {"JMLSYNC_SERVR__LISTEN": "0.0.0.0:1"})
    assert lines == [
        "  unknown key: environment variable JMLSYNC_SERVR__LISTEN"
        " (did you mean JMLSYNC_SERVER__LISTEN?)"
    ]
    lines = _error(path, {"JMLSYNC_SERVER__LISTEN": "nowhere"})
    assert len(lines) == 1
    assert lines[0].startswith("  server.listen (environment variable JMLSYNC_SERVER__LISTEN): ")


def test_jmlsync_config_is_not_an_override(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    load_settings(path, {"JMLSYNC_CONFIG": str(path), "JMLSYNC_SERVER__LISTEN": "127.0.0.1:9"})


def test_the_command_prints_the_variable(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = CliRunner().invoke(
        main, ["config", "check", "--config", str(config)], env={"JMLSYNC_SERVER__LISTN": "x"}
    )
    assert result.exit_code == 1
    assert "environment variable JMLSYNC_SERVER__LISTN (did you mean JMLSYNC_SERVER__LISTEN?)" in (
        result.stderr
    )
