"""Fixtures: a configured jmlsync on each store backend, in-process or as a real process.

Markers (registered in pyproject.toml): ``postgresql`` on every test that runs on the
PostgreSQL server (the ``store_url`` param, or a module that needs PostgreSQL alone);
``process`` on every test that starts a real child process (``jmlsync serve``, moto, slapd,
scim2-server, chromium): the fixtures that start one are marked with ``starts_process`` and
a hook below marks the tests that use them; tests that start one themselves say so.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from jmlsync.config import load_settings
from jmlsync.service import build_app
from jmlsync.store.directory import SqlStore
from tests.postgres import fresh_database

F = TypeVar("F", bound=Callable[..., Any])

TOKENS = ("t0-" + "a" * 40, "t1-" + "b" * 40)
BASE_PATH = "/scim/v2"


#: The store of ``write_config`` unless told otherwise, relative to the configuration.
SQLITE_URL = "sqlite:///state/jmlsync.db"


def write_config(
    tmp_path: Path, *, port: int = 0, extra: str = "", store_url: str = SQLITE_URL
) -> Path:
    """A configuration with two valid tokens and the store at ``store_url`` (by default a
    SQLite file), all under ``tmp_path``."""
    (tmp_path / "tokens").write_text("\n".join(TOKENS) + "\n")
    # serve refuses a tokens file others may read.
    (tmp_path / "tokens").chmod(0o600)
    config = tmp_path / "jmlsync.toml"
    config.write_text(
        f"""
[server]
listen = "127.0.0.1:{port}"
base_path = "{BASE_PATH}"
tokens_file = "tokens"

[store]
url = "{store_url}"
{extra}
"""
    )
    return config


def starts_process(fixture: F) -> F:
    """Mark a fixture function (under ``@pytest.fixture``) as starting a child process: every
    test that uses it, directly or through another fixture, is marked ``process``."""
    fixture._jmlsync_starts_process = True  # type: ignore[attr-defined]
    return fixture


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("store_url") == "postgresql":
            # Also when a test narrows the backends with an indirect parametrize.
            item.add_marker(pytest.mark.postgresql)
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            continue
        for name in item.fixturenames:
            definitions = info.name2fixturedefs.get(name, ())
            if definitions and getattr(definitions[-1].func, "_jmlsync_starts_process", False):
                item.add_marker(pytest.mark.process)
                break


BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgresql),
]


@pytest.fixture(params=BACKENDS)
async def store_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """The store of a test, on each backend: every store, queue, assurance, pipeline and
    service test asks for it (directly or through ``config_path``) and runs twice.

    ``sqlite``: ``SQLITE_URL``, a file under the test's directory. ``postgresql``: a new
    database of its own on the server at 127.0.0.1:5432, dropped afterwards; the test is
    skipped, saying so, only when that server does not answer (CI starts it).

    Cost: each real ``jmlsync serve`` process a test starts is paid on both backends. Where a
    slow process test's subject is not storage, it may narrow this fixture to the backend where
    storage behaviour differs, PostgreSQL, with ``@pytest.mark.parametrize("store_url",
    ["postgresql"], indirect=True)`` and leave SQLite to its in-process twin; the hook below
    still marks it ``postgresql``. No test narrows it yet; the process tests that write their
    own configuration (``write_config`` without ``store_url``) stay on SQLite.
    """
    if request.param == "sqlite":
        yield SQLITE_URL
        return
    async with fresh_database() as url:
        yield url


@contextlib.asynccontextmanager
async def opened_store(store_url: str, directory: Path) -> AsyncIterator[SqlStore]:
    """The store at ``store_url``, opened directly (``SQLITE_URL``: a file in ``directory``)."""
    if store_url == SQLITE_URL:
        store = await SqlStore.open(directory / "jmlsync.db")
    else:
        store = await SqlStore.open_postgres(store_url)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def sql_store(store_url: str, tmp_path: Path) -> AsyncIterator[SqlStore]:
    """A store opened directly on each backend (no service around it)."""
    async with opened_store(store_url, tmp_path) as store:
        yield store


@pytest.fixture
def config_path(store_url: str, tmp_path: Path) -> Path:
    """A configuration on each store backend: every test of the service runs on both."""
    return write_config(tmp_path, store_url=store_url)


@dataclass
class Reply:
    status: int
    body: Any
    headers: Any


class ScimClient:
    """A thin SCIM client for tests: JSON in, (status, JSON, headers) out."""

    def __init__(self, session: aiohttp.ClientSession, root: str) -> None:
        self.session = session
        self.root = root

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> Reply:
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
        # A stream, not bytes: aiohttp warns about large raw bodies (tests send 1 MiB ones).
        stream = io.BytesIO(data) if data is not None else None
        all_headers = {"Content-Type": "application/scim+json"}
        all_headers.update(headers or {})
        async with self.session.request(
            method, self.root + path, data=stream, headers=all_headers, params=params
        ) as response:
            text = await response.text()
            parsed = json.loads(text) if text else None
            return Reply(response.status, parsed, response.headers)

    async def get(self, path: str, **kw: Any) -> Reply:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return await self.request("POST", path, body, **kw)

    async def put(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return await self.request("PUT", path, body, **kw)

    async def patch(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return await self.request("PATCH", path, body, **kw)

    async def delete(self, path: str, **kw: Any) -> Reply:
        return await self.request("DELETE", path, **kw)

    async def create_user(self, user_name: str, **attrs: Any) -> dict[str, Any]:
        body = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": user_name}
        body.update(attrs)
        reply = await self.post("/Users", body)
        assert reply.status == 201, reply.body
        return reply.body  # type: ignore[no-any-return]

    async def create_group(self, name: str, members: list[str] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": name,
        }
        if members is not None:
            body["members"] = [{"value": m} for m in members]
        reply = await self.post("/Groups", body)
        assert reply.status == 201, reply.body
        return reply.body  # type: ignore[no-any-return]


@contextlib.asynccontextmanager
async def served(config: Path) -> AsyncIterator[str]:
    """The real application for ``config`` served in-process on a loopback port: its URL."""
    app = await build_app(load_settings(config))
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield str(server.make_url(""))
    finally:
        await server.close()


@pytest.fixture
async def server_url(config_path: Path) -> AsyncIterator[str]:
    """The base URL of the real application served in-process on a loopback port."""
    async with served(config_path) as url:
        yield url


#: `[scim]` as RFC 7644 permits: undeclared attributes and unknown members refused.
STRICT = """
[scim]
unknown_attributes = "reject"
unknown_members = "reject"
"""


@pytest.fixture
async def strict_scim(config_path: Path) -> AsyncIterator[ScimClient]:
    """A client of a service that refuses undeclared attributes and unknown members."""
    with config_path.open("a") as config:
        config.write(STRICT)
    headers = {"Authorization": f"Bearer {TOKENS[0]}"}
    async with served(config_path) as url, aiohttp.ClientSession(headers=headers) as session:
        yield ScimClient(session, url.rstrip("/") + BASE_PATH)


@pytest.fixture
async def scim(server_url: str) -> AsyncIterator[ScimClient]:
    """An authenticated client of the in-process service's SCIM root."""
    headers = {"Authorization": f"Bearer {TOKENS[0]}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        yield ScimClient(session, server_url.rstrip("/") + BASE_PATH)


@pytest.fixture
async def anonymous(server_url: str) -> AsyncIterator[ScimClient]:
    """A client that sends no token."""
    async with aiohttp.ClientSession() as session:
        yield ScimClient(session, server_url.rstrip("/") + BASE_PATH)


@dataclass
class ServiceProcess:
    process: asyncio.subprocess.Process
    url: str
    log: list[str]
    drained: asyncio.Task[None]


_SERVING = re.compile(r"serving SCIM on (https?://\S+)")


async def start_service(config: Path) -> ServiceProcess:
    """Start ``jmlsync serve`` as a child process; return once it logged its listening URL."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "jmlsync",
        "serve",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    assert process.stdout is not None
    log: list[str] = []
    async with asyncio.timeout(30):
        while True:
            line = (await process.stdout.readline()).decode()
            if not line:
                raise RuntimeError("jmlsync serve exited before serving:\n" + "".join(log))
            log.append(line)
            match = _SERVING.search(line)
            if match:
                break

    async def drain() -> None:
        assert process.stdout is not None
        async for raw in process.stdout:
            log.append(raw.decode())

    return ServiceProcess(process, match.group(1), log, asyncio.create_task(drain()))


async def stop_service(service: ServiceProcess) -> int:
    if service.process.returncode is None:
        service.process.terminate()
    async with asyncio.timeout(30):
        code = await service.process.wait()
        await service.drained
    return code


async def kill_service(service: ServiceProcess) -> int:
    """SIGKILL the service and wait for its exit code.

    Only the child watcher may reap the process: a second signal before it reported the exit
    (``terminate()`` polls the pid first) would reap the zombie itself and leave the watcher
    reporting 255 instead of -9.
    """
    service.process.send_signal(signal.SIGKILL)
    async with asyncio.timeout(30):
        code = await service.process.wait()
        await service.drained
    return code


@pytest.fixture
@starts_process
async def service(config_path: Path) -> AsyncIterator[ServiceProcess]:
    """A real ``jmlsync serve`` process on a loopback port."""
    running = await start_service(config_path)
    try:
        yield running
    finally:
        await stop_service(running)
