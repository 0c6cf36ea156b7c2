"""``[console]`` in the configuration, and the console's HTTP surface without a browser: its
paths are not behind the SCIM bearer token, and nothing opens without a session."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from jmlsync.config import ConfigError, load_settings
from tests.conftest import TOKENS, served

pytestmark = pytest.mark.timeout(60)

CONSOLE = """
[console]
enabled = true
admin_groups = ["admins"]
[console.oidc]
issuer = "https://idp.invalid"
client_id = "jmlsync"
"""


def _config(tmp_path: Path, console: str) -> Path:
    path = tmp_path / "jmlsync.toml"
    path.write_text(f'[store]\nurl = "sqlite:///j.db"\n{console}')
    return path


@pytest.mark.parametrize(
    ("console", "problem"),
    [
        ("[console]\nenabled = true\nadmin_groups = ['a']\n", "lacks issuer, client_id"),
        (
            "[console]\nenabled = true\nadmin_groups = ['a']\n[console.oidc]\n"
            "issuer = 'http://idp.example'\nclient_id = 'c'\n",
            "must be https:// unless insecure_http",
        ),
        (
            "[console]\nenabled = true\n[console.oidc]\nissuer = 'https://idp.example'\n"
            "client_id = 'c'\n",
            "admin_groups is empty",
        ),
        ("[console.oidc]\nscopes = ['email']\n", "console.oidc.scopes: must include 'openid'"),
        ("[console]\nbase_path = 'console'\n", "console.base_path: must start with '/'"),
    ],
)
def test_console_configuration_is_checked(tmp_path: Path, console: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        load_settings(_config(tmp_path, console), environ={})


def test_console_defaults_and_secret_path(tmp_path: Path) -> None:
    settings = load_settings(
        _config(tmp_path, "[console.oidc]\nclient_secret_file = 'secret'\n"), environ={}
    )
    assert settings.console.enabled is False
    assert settings.console.base_path == "/console"
    assert settings.console.oidc.username_claim == "email"
    assert settings.console.oidc.client_secret_file == tmp_path / "secret"


def test_config_check_and_schema_know_the_console(tmp_path: Path) -> None:
    config = _config(tmp_path, CONSOLE)
    run = [sys.executable, "-m", "jmlsync", "config"]
    checked = subprocess.run([*run, "check", "--config", str(config)], capture_output=True)
    assert checked.returncode == 0, checked.stderr
    assert b"console: /console, sign-in at https://idp.invalid" in checked.stdout
    missing = config.read_text() + 'client_secret_file = "nowhere"\n'
    config.write_text(missing)
    checked = subprocess.run([*run, "check", "--config", str(config)], capture_output=True)
    assert checked.returncode == 1
    assert b"client_secret_file" in checked.stderr
    schema = json.loads(subprocess.run([*run, "schema"], capture_output=True, check=True).stdout)
    assert "console" in schema["properties"]
    assert "ConsoleOidcSettings" in schema["$defs"]


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


async def test_the_console_has_its_own_authentication(config_path: Path) -> None:
    _append(config_path, CONSOLE)
    async with served(config_path) as url, aiohttp.ClientSession() as http:
        root = url.rstrip("/")
        async with http.get(f"{root}/console", allow_redirects=False) as reply:
            assert reply.status == 302
            assert reply.headers["Location"] == "/console/"
        async with http.get(f"{root}/console/overview", allow_redirects=False) as reply:
            assert reply.status == 302
            assert reply.headers["Location"] == "/console/login?next=/console/overview"
            assert reply.headers["X-Frame-Options"] == "DENY"
        async with http.get(f"{root}/console/login") as reply:
            assert reply.status == 200
            assert "text/html" in reply.headers["Content-Type"]
            assert "frame-ancestors 'none'" in reply.headers["Content-Security-Policy"]
            assert 'href="/console/login/start?next=%2Fconsole%2F"' in await reply.text()
            assert reply.headers["Cache-Control"] == "no-store"
        async with http.get(f"{root}/console/static/console.css") as reply:
            assert reply.status == 200
            assert reply.content_type == "text/css"
            assert reply.headers["Cache-Control"] == "max-age=3600"
        async with http.post(f"{root}/console/logout", data={"csrf_token": "x"}) as reply:
            assert reply.status == 403  # no session, no CSRF token of one
        bearer = {"Authorization": f"Bearer {TOKENS[0]}"}
        async with http.get(
            f"{root}/console/overview", headers=bearer, allow_redirects=False
        ) as reply:
            assert reply.status == 302  # a SCIM token does not open the console
        async with http.get(f"{root}/console/callback?state=a&code=b") as reply:
            assert reply.status == 403  # a sign-in not started in this browser
            assert "not started in this browser" in await reply.text()
        async with http.get(f"{root}/scim/v2/Users") as reply:
            assert reply.status == 401  # SCIM still needs its token
        # The console is exempt from SCIM's token by the route it matched, not the path's
        # text: a path dressed to start like the console's is the console's (its sign-in),
        # never SCIM's data.
        for dressed in ("/console/../scim/v2/Users", "/console/%2e%2e/scim/v2/Users"):
            raw = aiohttp.client.URL(f"{root}{dressed}", encoded=True)
            async with http.get(raw, allow_redirects=False) as reply:
                assert reply.status == 302, dressed
                assert reply.headers["Location"].startswith("/console/login?next=")
                assert "Resources" not in await reply.text()
