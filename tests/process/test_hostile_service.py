"""Hostile clients against a real ``jmlsync serve``: input, slow sockets, token guessing, a
second serve on the same store, a tokens file others can read."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.conftest import (
    BASE_PATH,
    TOKENS,
    ScimClient,
    ServiceProcess,
    kill_service,
    start_service,
    stop_service,
    write_config,
)
from tests.postgres import fresh_database

pytestmark = pytest.mark.process

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
SEARCH = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
AUTH = {"Authorization": f"Bearer {TOKENS[0]}"}


def server_config(tmp_path: Path, keys: str) -> Path:
    """``write_config`` with more ``[server]`` keys."""
    config = write_config(tmp_path)
    text = config.read_text().replace('tokens_file = "tokens"', f'tokens_file = "tokens"\n{keys}')
    config.write_text(text)
    return config


async def run_jmlsync(*args: str) -> tuple[int, str, str]:
    """Run ``python -m jmlsync ARGS`` to its end: exit code, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "jmlsync",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    parts = urlsplit(url)
    return await asyncio.open_connection(parts.hostname, parts.port)


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """Everything the server sends until it closes; fails if it has not closed in time.

    A server that closes a socket with bytes of ours still unread resets it (RST, not FIN):
    the connection is closed all the same, so a reset counts as closed with nothing more."""
    async with asyncio.timeout(seconds):
        received = b""
        try:
            while chunk := await reader.read(65536):
                received += chunk
        except ConnectionResetError:
            pass
        return received


def log_levels(service: ServiceProcess) -> list[tuple[str, str]]:
    """(level, message) of every JSON log line of the process."""
    lines = []
    for raw in service.log:
        try:
            record = json.loads(raw)
        except ValueError:
            lines.append(("raw", raw))
            continue
        lines.append((record.get("level", ""), record.get("msg", "")))
    return lines


async def wait_for_log(service: ServiceProcess, text: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not any(text in line for line in service.log):
        assert time.monotonic() < deadline, f"no log line with {text!r}:\n{''.join(service.log)}"
        await asyncio.sleep(0.05)


async def test_the_hostile_corpus_through_a_real_serve(config_path: Path) -> None:
    service = await start_service(config_path)
    try:
        async with aiohttp.ClientSession(headers=AUTH) as session:
            scim = ScimClient(session, service.url)
            await scim.create_user("bea@x.io")
            before = (await scim.get("/Users")).body
            deep = b'{"schemas":["' + USER.encode() + b'"],"userName":"m","x":'
            deep += b"[" * 10_000 + b"]" * 10_000 + b"}"
            nested = "not (" * 1000 + 'userName eq "x"' + ")" * 1000
            bodies: list[tuple[str, str, bytes, str]] = [
                ("POST", "/Users", deep, "invalidSyntax"),
                ("POST", "/Users", b'{"userName":"\\ud800"}', "invalidValue"),
                ("POST", "/Users", b'{"userName":"a\\u0000"}', "invalidValue"),
                (
                    "POST",
                    "/Users/.search",
                    json.dumps({"schemas": [SEARCH], "filter": nested}).encode(),
                    "invalidFilter",
                ),
                (
                    "POST",
                    "/.search",
                    json.dumps({"schemas": [SEARCH], "filter": "(" * 3000}).encode(),
                    "invalidFilter",
                ),
            ]
            for method, path, raw, scim_type in bodies:
                reply = await scim.request(method, path, raw=raw)
                assert (reply.status, reply.body.get("scimType")) == (400, scim_type), reply.body
            reply = await scim.get("/Users", params={"filter": 'userName eq "\\u0000"'})
            assert (reply.status, reply.body["scimType"]) == (400, "invalidValue")
            assert (await scim.get("/Users")).body == before
        reader, writer = await connect(service.url)
        writer.write(
            f"GET {BASE_PATH}/Users HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".encode()
            + b"Authorization: Bearer \xff\xfe\r\n\r\n"
        )
        assert (await closed_within(reader, 10)).startswith(b"HTTP/1.1 401")
        writer.close()
    finally:
        assert await stop_service(service) == 0
    levels = log_levels(service)
    assert not [line for line in levels if line[0] in ("error", "critical", "raw")], levels
    assert not any("Traceback" in line for line in service.log)


async def test_a_second_serve_on_the_same_sqlite_store_exits_1(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    first = await start_service(config)
    try:
        code, _, err = await run_jmlsync("serve", "--config", str(config))
        assert code == 1
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert f"already served by process {first.process.pid}" in lines[0]
        assert "jmlsync.db.lock" in lines[0]
        # Commands that only read still run beside it.
        code, out, err = await run_jmlsync("status", "--config", str(config))
        assert code == 0, err
        assert "queue" in out
    finally:
        await kill_service(first)
    # The lock went with the killed process: a new serve starts at once.
    again = await start_service(config)
    assert await stop_service(again) == 0


@pytest.mark.parametrize(("name", "mode"), [("tokens", 0o644), ("tokens", 0o640), ("m", 0o604)])
async def test_serve_refuses_a_tokens_file_others_can_read(
    tmp_path: Path, name: str, mode: int
) -> None:
    config = write_config(tmp_path)
    if name == "m":
        (tmp_path / "m").write_text("m" * 40 + "\n")
        text = config.read_text().replace(
            'tokens_file = "tokens"', 'tokens_file = "tokens"\nmetrics_token_file = "m"'
        )
        config.write_text(text)
    path = tmp_path / name
    path.chmod(mode)
    for command in ("serve", "config check"):
        code, _, err = await run_jmlsync(*command.split(), "--config", str(config))
        assert code == 1, command
        assert err.count("\n") == 1, err
        assert f"run chmod 600 {path}" in err
        assert "Traceback" not in err
    path.chmod(0o600)
    service = await start_service(config)
    assert await stop_service(service) == 0


async def test_slow_clients_are_cut_off_and_the_service_keeps_serving(tmp_path: Path) -> None:
    config = server_config(tmp_path, "header_timeout_seconds = 1\nbody_timeout_seconds = 1")
    service = await start_service(config)
    try:
        started = time.monotonic()
        sockets = [await connect(service.url) for _ in range(500)]

        async def trickle(writer: asyncio.StreamWriter) -> None:
            with_headers = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: y\r\n" * 20
            for byte in with_headers:
                if writer.is_closing():
                    return
                writer.write(bytes([byte]))
                try:
                    await writer.drain()
                except ConnectionError:
                    return
                await asyncio.sleep(0.1)

        trickles = [asyncio.create_task(trickle(writer)) for _, writer in sockets]
        # Served while 500 sockets trickle.
        root = service.url.removesuffix(BASE_PATH)
        async with aiohttp.ClientSession() as http, http.get(f"{root}/healthz") as reply:
            assert reply.status == 200
        answers = await asyncio.gather(*(closed_within(reader, 10) for reader, _ in sockets))
        assert answers == [b""] * 500  # closed without an answer
        assert time.monotonic() - started < 8  # the whole trickle would take 60 s
        for task in trickles:
            task.cancel()
        for _, writer in sockets:
            writer.close()

        # A body that stops half-way: 408, then the connection closes.
        reader, writer = await connect(service.url)
        writer.write(
            f"POST {BASE_PATH}/Users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKENS[0]}\r\n"
            'Content-Type: application/scim+json\r\nContent-Length: 100\r\n\r\n{"user'.encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 408"), head
        # aiohttp lingers up to 10 s reading what is left of the body, then closes.
        await closed_within(reader, 15)
        writer.close()

        # An idle kept-alive connection is not a slow one: it outlives the header deadline.
        reader, writer = await connect(service.url)
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        for _ in range(2):
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200"), head
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            await asyncio.sleep(1.5)  # longer than header_timeout_seconds, on purpose
        writer.close()
    finally:
        assert await stop_service(service) == 0
    await wait_for_log(service, "request headers not received within 1.0s")
    assert not any("Traceback" in line for line in service.log)


async def test_token_guessing_is_answered_429_per_address(tmp_path: Path) -> None:
    config = server_config(tmp_path, "auth_failures_per_address = 3\nauth_throttle_seconds = 600")
    config.write_text(config.read_text() + "\n[alerts]\nauth_failures_per_minute = 2\n")
    service = await start_service(config)
    try:
        guess = {"Authorization": "Bearer " + "g" * 40}
        statuses: list[int] = []
        retry_after: Any = None
        async with aiohttp.ClientSession() as http:
            for _ in range(5):
                async with http.get(f"{service.url}/Users", headers=guess) as reply:
                    statuses.append(reply.status)
                    body = await reply.json(content_type=None)
                    retry_after = reply.headers.get("Retry-After")
            assert statuses == [401, 401, 401, 429, 429]
            assert body["status"] == "429"
            assert 590 <= int(retry_after) <= 600
            # The right token from the same address is not throttled.
            async with http.get(f"{service.url}/Users", headers=AUTH) as reply:
                assert reply.status == 200
        await wait_for_log(service, "ALERT auth_failures")
    finally:
        assert await stop_service(service) == 0


async def test_disconnects_and_malformed_http_are_logged_at_info(tmp_path: Path) -> None:
    service = await start_service(write_config(tmp_path))
    try:
        reader, writer = await connect(service.url)
        writer.write(
            f"POST {BASE_PATH}/Users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKENS[0]}\r\n"
            "Content-Type: application/scim+json\r\nContent-Length: 1000\r\n"
            "Expect: 100-continue\r\n\r\n".encode()
        )
        # 100 Continue: the request is routed, its handler about to read the body.
        continued = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert continued.startswith(b"HTTP/1.1 100"), continued
        writer.write(b'{"userName": "half')
        await writer.drain()
        writer.close()
        await wait_for_log(service, "POST /scim/v2/Users 400")
        reader, writer = await connect(service.url)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n")
        assert (await closed_within(reader, 10)).startswith(b"HTTP/1.0 400")
        writer.close()
        await wait_for_log(service, "malformed HTTP request")
    finally:
        assert await stop_service(service) == 0
    levels = log_levels(service)
    assert not [line for line in levels if line[0] in ("error", "critical", "raw")], levels
    assert not any("Traceback" in line for line in service.log)


@pytest.mark.postgresql
async def test_the_store_password_is_not_logged(tmp_path: Path) -> None:
    async with fresh_database() as url:
        # The test server trusts loopback: any password gets in, and none may be logged.
        with_password = url.replace("postgres@", "postgres:hunter2-secret@")
        config = write_config(tmp_path)
        text = config.read_text().replace('"sqlite:///state/jmlsync.db"', f'"{with_password}"')
        config.write_text(text)
        service = await start_service(config)
        assert await stop_service(service) == 0
    assert any("postgres:***@" in line for line in service.log), service.log
    assert not any("hunter2" in line for line in service.log)
