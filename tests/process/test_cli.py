"""The command line: configuration errors, tokens, and a clean stop of ``serve``."""

from __future__ import annotations

import signal
import stat
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from jmlsync.cli import main
from jmlsync.config import ConfigError, load_settings
from tests.conftest import start_service, stop_service, write_config


def run_cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ('[server]\nlisten = "nowhere"\n', "server.listen", "HOST:PORT"),
        ('[server]\nlistne = "127.0.0.1:1"\n', "server.listne", "unknown key"),
        ("[server]\nmax_body_bytes = 12\n", "server.max_body_bytes", "greater than or equal"),
        ('[store]\nurl = "mysql://x"\n', "store.url", "unsupported store URL"),
        ("[server\n", "", "not valid TOML"),
    ],
)
def test_config_errors_name_file_key_and_reason(
    tmp_path: Path, text: str, key: str, reason: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert str(path) in message
    assert key in message
    assert reason in message


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path))
    assert settings.server.tokens_file == tmp_path / "tokens"
    assert settings.store.sqlite_path == tmp_path / "state" / "jmlsync.db"


def test_serve_exits_non_zero_on_bad_config(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[server]\nlisten = "nowhere"\n')
    code, _, err = run_cli("serve", "--config", str(path))
    assert code == 1
    assert "server.listen" in err


def test_serve_exits_non_zero_without_tokens(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    (tmp_path / "tokens").write_text("# no token here\n")
    code, _, err = run_cli("serve", "--config", str(config))
    assert code == 1
    assert "no token" in err
    assert "tokens_file" in err


def test_token_generate_appends_hashed_and_protects_the_file(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    tokens = tmp_path / "tokens"
    tokens.unlink()
    code, first, _ = run_cli("token", "generate", "--config", str(config))
    assert code == 0
    assert stat.S_IMODE(tokens.stat().st_mode) == 0o600
    code, again, _ = run_cli("token", "generate", "--config", str(config), "--if-missing")
    assert code == 0
    assert again == ""
    code, second, _ = run_cli("token", "generate", "--config", str(config))
    assert code == 0
    text = tokens.read_text()
    # Stored hashed, labelled: the plaintext is printed once and is not in the file.
    assert first.strip() not in text
    assert second.strip() not in text
    labels = [line.split()[1] for line in text.splitlines() if line.startswith("bearer ")]
    assert labels == ["default", "default-2"]


@pytest.mark.process
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_serve_stops_cleanly_on_signal(tmp_path: Path, signum: int) -> None:
    service = await start_service(write_config(tmp_path))
    service.process.send_signal(signum)
    assert await stop_service(service) == 0
    assert any("stopping" in line for line in service.log)
