"""IdP credentials through a real `jmlsync serve` (SQLite and PostgreSQL) and the real CLI:
labelled bearer tokens and HTTP Basic passwords, stored hashed; good, bad, rotated and revoked
ones; the label as the audit actor and in the request log; plaintext files migrated in place;
when each was last used."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import TOKENS, ScimClient, ServiceProcess, start_service, stop_service

USER = "urn:ietf:params:scim:schemas:core:2.0:User"


async def cli(config: Path, *args: str) -> tuple[int, str, str]:
    """A ``jmlsync`` command as an operator runs it: its own process."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "jmlsync",
        *args,
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode is not None
    assert "Traceback" not in err.decode(), err.decode()
    return process.returncode, out.decode(), err.decode()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(user_and_password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(user_and_password.encode()).decode()}


async def status(service: ServiceProcess, headers: dict[str, str]) -> int:
    async with aiohttp.ClientSession() as session:
        scim = ScimClient(session, service.url.rstrip("/"))
        return (await scim.get("/Users", headers=headers)).status


def reloads(service: ServiceProcess) -> int:
    return sum("reloaded" in line and "token(s)" in line for line in service.log)


async def reloaded(service: ServiceProcess, before: int) -> None:
    """Wait until the service has read the tokens file again since ``before`` reloads: it
    looks at the file once a second, on a request (here a good bearer token's, which no
    throttle counts), and logs the reload."""
    async with asyncio.timeout(10):
        while reloads(service) == before:
            assert await status(service, bearer(TOKENS[0])) == 200
            await asyncio.sleep(0.05)  # a log line in another process has nothing to await


async def create(service: ServiceProcess, headers: dict[str, str], name: str) -> None:
    async with aiohttp.ClientSession() as session:
        scim = ScimClient(session, service.url.rstrip("/"))
        reply = await scim.post("/Users", {"schemas": [USER], "userName": name}, headers=headers)
        assert reply.status == 201, reply.body


async def actors(config: Path) -> dict[str, str]:
    """userName -> the actor of its user.create audit row."""
    code, out, err = await cli(config, "audit", "tail", "-n", "100", "--format", "json")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    return {
        row["subject"].split()[1]: row["actor"] for row in rows if row["action"] == "user.create"
    }


async def listing(config: Path) -> dict[str, dict[str, Any]]:
    code, out, err = await cli(config, "token", "list", "--format", "json")
    assert code == 0, err
    return {row["label"]: row for row in json.loads(out)}


def throttled(config: Path, allowed: int) -> None:
    text = config.read_text().replace(
        'tokens_file = "tokens"', f'tokens_file = "tokens"\nauth_failures_per_address = {allowed}'
    )
    config.write_text(text)


@pytest.mark.process
@pytest.mark.timeout(180)
async def test_bearer_tokens_labelled_hashed_rotated_revoked(config_path: Path) -> None:
    tokens = config_path.parent / "tokens"
    saved = config_path.parent / "okta.token"
    code, _, err = await cli(
        config_path, "token", "generate", "--label", "okta", "--output", str(saved)
    )
    assert code == 0, err
    okta = saved.read_text().strip()
    assert okta not in tokens.read_text()
    service = await start_service(config_path)
    try:
        await create(service, bearer(okta), "ann@x.io")
        await create(service, bearer(TOKENS[0]), "bob@x.io")  # a plaintext line still works
        assert await status(service, bearer("not-a-token-" + "x" * 30)) == 401
        schemeless = "schemeless-" + "z" * 30  # a token pasted without "Bearer "
        assert await status(service, {"Authorization": schemeless}) == 401

        code, out, err = await cli(config_path, "token", "migrate")
        assert code == 0, err
        assert "hashed 2 plaintext token(s): default, default-2" in out
        assert TOKENS[0] not in tokens.read_text()
        assert TOKENS[1] not in tokens.read_text()
        await create(service, bearer(TOKENS[1]), "cy@x.io")  # after the migration too

        # Rotation: a second token for the same IdP; both valid until the old is revoked.
        before = reloads(service)
        code, okta2, err = await cli(config_path, "token", "generate", "--label", "okta-2")
        assert code == 0, err
        await reloaded(service, before)
        assert await status(service, bearer(okta)) == 200
        assert await status(service, bearer(okta2.strip())) == 200
        fingerprint = (await listing(config_path))["okta"]["fingerprint"]
        before = reloads(service)
        code, out, err = await cli(config_path, "token", "revoke", fingerprint[:8])
        assert code == 0, err
        await reloaded(service, before)
        assert "revoked bearer 'okta'" in out
        assert await status(service, bearer(okta)) == 401
        assert await status(service, bearer(okta2.strip())) == 200
        code, _, err = await cli(config_path, "token", "revoke", "okta")
        assert code == 1
        assert "no credential labelled 'okta'" in err
    finally:
        assert await stop_service(service) == 0
    log = "".join(service.log)
    assert okta not in log
    assert TOKENS[0] not in log
    assert "schemeless" not in log
    assert "refused bearer credentials from 127.0.0.1" in log
    assert '"actor": "scim:okta"' in log  # the request log line
    assert await actors(config_path) == {
        "ann@x.io": "scim:okta",
        "bob@x.io": "scim:default",
        "cy@x.io": "scim:default-2",
    }
    listed = await listing(config_path)
    assert set(listed) == {"default", "default-2", "okta-2"}
    assert {row["stored"] for row in listed.values()} == {"hashed"}
    # Last use was written when the service stopped: to the minute, never per request.
    assert listed["default"]["last_used"] is not None
    assert listed["okta-2"]["last_used"] is not None
    assert listed["okta-2"]["created"] is not None


@pytest.mark.process
@pytest.mark.timeout(180)
async def test_basic_credentials_good_bad_rotated_revoked_and_throttled(
    config_path: Path,
) -> None:
    throttled(config_path, 4)
    code, ping, err = await cli(config_path, "token", "generate", "--basic", "--label", "ping")
    assert code == 0, err
    ping = ping.strip()
    username, _, password = ping.partition(":")
    assert username == "ping"
    assert password
    assert password not in (config_path.parent / "tokens").read_text()
    service = await start_service(config_path)
    try:
        await create(service, basic(ping), "ann@x.io")
        assert await status(service, basic(ping)) == 200  # the second one from the cache
        assert await status(service, bearer(TOKENS[0])) == 200  # bearer still accepted
        assert await status(service, basic("ping:wrong-password")) == 401
        assert await status(service, basic(f"nobody:{password}")) == 401
        async with (
            aiohttp.ClientSession() as session,
            session.get(service.url.rstrip("/") + "/Users", headers=basic("ping:x")) as reply,
        ):
            assert 'Basic realm="jmlsync"' in reply.headers["WWW-Authenticate"]

        # Rotation: a second Basic credential; both valid until the first is revoked.
        before = reloads(service)
        code, ping2, err = await cli(
            config_path, "token", "generate", "--basic", "--label", "ping-2"
        )
        assert code == 0, err
        await reloaded(service, before)
        ping2 = ping2.strip()
        assert ping2.startswith("ping-2:")
        await create(service, basic(ping2), "bob@x.io")
        assert await status(service, basic(ping)) == 200
        before = reloads(service)
        code, _, err = await cli(config_path, "token", "revoke", "ping")
        assert code == 0, err
        await reloaded(service, before)
        # Revoked although its success was cached: the cache goes with the file's change.
        assert await status(service, basic(ping)) == 401
        assert await status(service, basic(ping2)) == 200
        # Refusals count towards the address's allowance like bad tokens: then 429.
        answers = [await status(service, basic("ping-2:guess")) for _ in range(3)]
        assert answers[-1] == 429
        assert await status(service, basic(ping2)) == 200  # a good credential is never throttled
    finally:
        assert await stop_service(service) == 0
    log = "".join(service.log)
    assert password not in log
    assert "refused basic credentials from 127.0.0.1" in log
    assert await actors(config_path) == {"ann@x.io": "scim:ping", "bob@x.io": "scim:ping-2"}
    listed = await listing(config_path)
    assert listed["ping-2"]["kind"] == "basic"
    assert listed["ping-2"]["username"] == "ping-2"
    assert listed["ping-2"]["last_used"] is not None
    assert listed["default-2"]["last_used"] is None
    assert "ping" not in listed


@pytest.mark.process
async def test_basic_is_refused_when_no_basic_credential_is_configured(
    config_path: Path,
) -> None:
    service = await start_service(config_path)
    try:
        # A Basic header carrying a valid bearer token as its password is still refused.
        assert await status(service, basic(f"default:{TOKENS[0]}")) == 401
        assert await status(service, bearer(TOKENS[0])) == 200
    finally:
        await stop_service(service)


async def test_token_commands_refuse_bad_input_in_one_line(tmp_path: Path) -> None:
    from tests.conftest import write_config

    config = write_config(tmp_path)
    code, _, err = await cli(config, "token", "generate", "--label", "default")
    assert code == 1
    assert "already has a credential labelled 'default'" in err
    code, _, err = await cli(config, "token", "generate", "--label", "no spaces/here")
    assert code == 1
    assert "bad label" in err
    code, _, err = await cli(config, "token", "revoke", "missing")
    assert code == 1
    (tmp_path / "tokens").write_text(TOKENS[0] + "\n")
    code, _, err = await cli(config, "token", "revoke", "default")
    assert code == 1
    assert "only credential" in err
    (tmp_path / "tokens").write_text("bearer okta sha256:zz -\n")
    code, _, err = await cli(config, "token", "list")
    assert code == 1
    assert "tokens:1" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = await cli(config, "config", "check")
    assert code == 1
    assert "tokens:1" in err


async def test_a_secrets_file_is_built_without_a_configuration(tmp_path: Path) -> None:
    """What goes into a Kubernetes Secret: a file made with --file, no configuration."""
    secret = tmp_path / "secret" / "tokens"
    nowhere = tmp_path / "missing.toml"
    code, _, err = await cli(nowhere, "token", "generate", "--file", str(secret))
    assert code == 1
    assert f"--file: directory {secret.parent} does not exist" in err
    secret.parent.mkdir()
    code, token, err = await cli(
        nowhere, "token", "generate", "--file", str(secret), "--label", "okta"
    )
    assert code == 0, err
    code, _, err = await cli(
        nowhere, "token", "generate", "--file", str(secret), "--basic", "--label", "ping"
    )
    assert code == 0, err
    code, out, err = await cli(nowhere, "token", "list", "--file", str(secret))
    assert code == 0, err
    assert [line.split()[:2] for line in out.splitlines()[1:]] == [
        ["bearer", "okta"],
        ["basic", "ping"],
    ]
    assert token.strip() not in secret.read_text()
