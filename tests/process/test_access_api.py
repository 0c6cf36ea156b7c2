"""The HTTP API of time-bound access through a real `jmlsync serve`, on both store backends:
personal tokens (never SCIM's), the lifecycle over HTTP with JSON problem bodies, and a
bounded schemathesis run against the served OpenAPI document with no 5xx."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import TOKENS, start_service, stop_service
from tests.process.test_access_process import ACCESS, HEADERS, Directory, acli

pytestmark = pytest.mark.process

API = "/api/v1"


async def _token(config: Path, user: str) -> str:
    code, out, err = await acli(config, "token", "generate", "--user", user, "--scope", "access")
    assert code == 0, err
    assert "shown only now" in err
    return out.strip()


class Api:
    def __init__(self, http: aiohttp.ClientSession, root: str) -> None:
        self.http, self.root = http, root

    async def call(
        self, method: str, path: str, token: str | None, body: Any = None, raw: bytes | None = None
    ) -> tuple[int, Any, str]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if raw is not None:
            headers["Content-Type"] = "application/json"
        async with self.http.request(
            method, self.root + API + path, json=body, data=raw, headers=headers
        ) as reply:
            text = await reply.text()
            return reply.status, json.loads(text) if text else None, reply.content_type


async def _raw_status(root: str, path: str) -> bytes:
    """The status line of a GET of ``path`` sent byte for byte (no client normalisation)."""
    host, port = root.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    line = await reader.readline()
    writer.close()
    await writer.wait_closed()
    return line.strip()


def _problem(reply: tuple[int, Any, str], status: int, match: str) -> None:
    code, body, kind = reply
    assert code == status, body
    assert kind == "application/problem+json"
    assert body["status"] == status, body
    assert match in body["detail"], body


@pytest.mark.timeout(180)
async def test_access_requests_over_http(config_path: Path) -> None:
    with config_path.open("a") as handle:
        handle.write(ACCESS)
    config = config_path
    service = await start_service(config)
    root = service.url.removesuffix("/scim/v2")
    try:
        async with aiohttp.ClientSession(headers=HEADERS) as scim:
            directory = Directory(scim, service.url)
            for name in ("ada@x.io", "bob@x.io", "cy@x.io"):
                await directory.user(name)
            await directory.group("oncall", ["ada@x.io"])
            await directory.group("approvers", ["bob@x.io", "cy@x.io"])
        ada, bob, cy = [await _token(config, n) for n in ("ada@x.io", "bob@x.io", "cy@x.io")]
        async with aiohttp.ClientSession() as http:
            api = Api(http, root)
            code, spec, _ = await api.call("GET", "/openapi.json", None)
            assert code == 200
            assert spec["openapi"] == "3.1.0"
            assert f"{API}/access-requests/{{id}}/approve" in spec["paths"]
            ids = [op["operationId"] for item in spec["paths"].values() for op in item.values()]
            assert len(ids) == len(set(ids)) == 10  # access 7, reviews 3

            new = {"grant": "sandbox/admin", "duration": "30m", "reason": "r", "ticket": "INC-3"}
            _problem(await api.call("POST", "/access-requests", None, new), 401, "token")
            _problem(await api.call("POST", "/access-requests", TOKENS[0], new), 401, "token")
            async with http.get(
                f"{service.url}/Users", headers={"Authorization": f"Bearer {ada}"}
            ) as reply:
                assert reply.status == 401, "a personal token never authorises SCIM"
            for sneaky in ("/api/../scim/v2/Users", "/api/v1/%2e%2e/%2e%2e/scim/v2/Users"):
                status = await _raw_status(root, sneaky)
                assert status == b"HTTP/1.1 401 Unauthorized", (sneaky, status)

            bad = {**new, "grant": "sandbox/nope"}
            _problem(await api.call("POST", "/access-requests", ada, bad), 422, "unknown")
            _problem(
                await api.call("POST", "/access-requests", ada, {**new, "duration": "9h"}),
                422,
                "over the maximum",
            )
            _problem(
                await api.call("POST", "/access-requests", ada, {**new, "duration": "x"}),
                400,
                "duration",
            )
            _problem(await api.call("POST", "/access-requests", ada, raw=b"{"), 400, "JSON")
            _problem(await api.call("GET", "/access-requests/77", ada), 404, "#77")
            _problem(await api.call("GET", "/nothing-here", ada), 404, "no endpoint")

            code, made, _ = await api.call("POST", "/access-requests", ada, new)
            assert code == 201
            assert made["state"] == "pending"
            assert made["user"] == "ada@x.io"
            one = f"/access-requests/{made['id']}"
            _problem(await api.call("POST", f"{one}/approve", ada), 403, "their own request")
            code, body, _ = await api.call("POST", f"{one}/approve", bob)
            assert code == 200
            assert body["state"] == "pending"
            _problem(await api.call("POST", f"{one}/approve", bob), 422, "already approved")
            code, body, _ = await api.call("POST", f"{one}/approve", cy)
            assert code == 200
            assert body["state"] == "active"
            code, listed, _ = await api.call("GET", "/access-requests?state=active", bob)
            assert [r["id"] for r in listed["requests"]] == [made["id"]]
            code, shown, _ = await api.call("GET", one, cy)
            actors = [row["actor"] for row in shown["history"]]
            assert actors[0].startswith("ada@x.io (token #")
            _problem(await api.call("POST", f"{one}/deny", cy, {}), 400, "'reason' is required")
            code, body, _ = await api.call("POST", f"{one}/end", ada)
            assert code == 200
            assert body["state"] == "ended"
            assert body["ended_by"] == "ada@x.io"

            code, out, _ = await acli(config, "token", "list", "--format", "json")
            tokens = [t for t in json.loads(out) if t["kind"] == "personal"]
            assert {t["user"] for t in tokens} == {"ada@x.io", "bob@x.io", "cy@x.io"}
            assert "token_hash" not in out
            assert ada not in out
            ada_id = next(t["id"] for t in tokens if t["user"] == "ada@x.io")
            code, _, _ = await acli(config, "token", "revoke", f"personal:{ada_id}")
            assert code == 0
            _problem(await api.call("GET", "/access-requests", ada), 401, "revoked")

            schemathesis = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "schemathesis.cli",
                "run",
                f"{root}{API}/openapi.json",
                "--checks",
                "not_a_server_error",
                "--header",
                f"Authorization: Bearer {bob}",
                "--include-tag",  # the reviews paths have their run in test_reviews_api
                "access",
                "--max-examples",
                "15",
                "--seed",
                "17",
                "--workers",
                "1",
                "--generation-database",
                "none",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                cwd=config.parent,  # its cache and reports stay out of the work tree
            )
            output, _ = await schemathesis.communicate()
            text = output.decode()
            assert schemathesis.returncode == 0, text[-4000:]
            assert "Tested: 7" in text, text[-4000:]
            assert "Fuzzing" in text, text[-4000:]
    finally:
        assert await stop_service(service) == 0
