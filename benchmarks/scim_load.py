"""Mixed joiner-mover-leaver SCIM load against a SCIM base URL, with two yardsticks.

    .venv/bin/python -m benchmarks.scim_load --users 2000 --groups 20 --concurrency 16
    .venv/bin/python -m benchmarks.scim_load --url http://host/scim/v2 --token-file FILE

Without --url it starts a real `jmlsync serve` (SQLite, synchronous = FULL, the ledger target
and one rule) on loopback. The load, bounded in size: create users, create groups, add members
in batches of 50, deactivate a third of the users, delete a tenth, then read everything back and
check the state. Reports requests/s and p50/p90/p99 per operation, and errors.

In the same run it measures a bare aiohttp handler doing the same JSON round trip (POST a user,
answer it with an id) at the same concurrency, so jmlsync's POST /Users reads as a fraction of
the framework's ceiling on this machine; and with --compare-scim2-server it runs the same load
against the reference server scim2-server for a side-by-side ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks._service import TOKEN, running, write_config

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
RULES = """
[targets.ledger]
kind = "ledger"
path = "ledger.db"

[[rules]]
group = "load-group-0"
grants = [{ target = "ledger", role = "developer" }]
"""

BARE_SERVER = """
import json, sys, uuid
from aiohttp import web
async def create(request):
    body = await request.json()
    body["id"] = str(uuid.uuid4())
    return web.Response(body=json.dumps(body).encode(), status=201,
                        content_type="application/scim+json")
app = web.Application()
app.router.add_post("/scim/v2/Users", create)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


@dataclass
class Stats:
    """Latencies and errors per operation."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    seconds: float = 0.0

    def record(self, op: str, started: float, ok: bool) -> None:
        self.latencies[op].append(time.perf_counter() - started)
        if not ok:
            self.errors[op] += 1

    def report(self) -> dict[str, Any]:
        total = sum(len(v) for v in self.latencies.values())
        ops = {}
        for op, samples in self.latencies.items():
            ordered = sorted(samples)
            ops[op] = {
                "requests": len(ordered),
                "p50_ms": round(statistics.median(ordered) * 1000, 2),
                "p90_ms": round(ordered[int(0.90 * (len(ordered) - 1))] * 1000, 2),
                "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))] * 1000, 2),
                "errors": self.errors.get(op, 0),
            }
        return {
            "requests": total,
            "seconds": round(self.seconds, 2),
            "requests_per_s": round(total / self.seconds, 1) if self.seconds else 0.0,
            "errors": sum(self.errors.values()),
            "operations": ops,
        }


class Load:
    """The JML load against one SCIM base URL."""

    def __init__(self, http: aiohttp.ClientSession, url: str, concurrency: int) -> None:
        self.http = http
        self.url = url.rstrip("/")
        self.limit = asyncio.Semaphore(concurrency)
        self.stats = Stats()

    async def call(self, op: str, method: str, path: str, body: Any = None) -> Any:
        async with self.limit:
            started = time.perf_counter()
            async with self.http.request(method, self.url + path, json=body) as reply:
                text = await reply.read()
                ok = reply.status < 300
                self.stats.record(op, started, ok)
                return json.loads(text) if ok and text else None

    async def gather(self, calls: list[Awaitable[Any]]) -> list[Any]:
        return await asyncio.gather(*calls)

    async def run(self, users: int, groups: int) -> dict[str, Any]:
        started = time.perf_counter()
        created = await self.gather(
            [
                self.call(
                    "POST /Users",
                    "POST",
                    "/Users",
                    {
                        "schemas": [USER],
                        "userName": f"load{i}@example.com",
                        "active": True,
                        "name": {"givenName": "Load", "familyName": str(i)},
                        "emails": [{"value": f"load{i}@example.com", "type": "work"}],
                    },
                )
                for i in range(users)
            ]
        )
        ids = [user["id"] for user in created if user]
        made = await self.gather(
            [
                self.call(
                    "POST /Groups",
                    "POST",
                    "/Groups",
                    {"schemas": [GROUP], "displayName": f"load-group-{g}"},
                )
                for g in range(groups)
            ]
        )
        group_ids = [group["id"] for group in made if group]
        await self._members(ids, group_ids)
        leavers, deleted = ids[::3], ids[1::10]
        await self.gather(
            [
                self.call(
                    "PATCH /Users (deactivate)",
                    "PATCH",
                    f"/Users/{uid}",
                    {
                        "schemas": [PATCH_OP],
                        "Operations": [{"op": "Replace", "path": "active", "value": "False"}],
                    },
                )
                for uid in leavers
            ]
        )
        await self.gather(
            [self.call("DELETE /Users", "DELETE", f"/Users/{uid}") for uid in deleted]
        )
        self.stats.seconds = time.perf_counter() - started
        return {**self.stats.report(), "check": await self._check(ids, leavers, deleted, group_ids)}

    async def _members(self, ids: list[str], group_ids: list[str]) -> None:
        calls = []
        for g, group_id in enumerate(group_ids):
            members = ids[g :: len(group_ids)]
            for start in range(0, len(members), 50):
                batch = [{"value": uid} for uid in members[start : start + 50]]
                calls.append(
                    self.call(
                        "PATCH /Groups (add 50)",
                        "PATCH",
                        f"/Groups/{group_id}",
                        {
                            "schemas": [PATCH_OP],
                            "Operations": [{"op": "add", "path": "members", "value": batch}],
                        },
                    )
                )
        await self.gather(calls)

    async def _check(
        self, ids: list[str], leavers: list[str], deleted: list[str], group_ids: list[str]
    ) -> dict[str, Any]:
        """Read the state back: every user, and every group's member count."""
        gone = set(deleted)
        inactive = set(leavers) - gone
        problems = 0
        for start in range(0, len(ids), 200):
            chunk = ids[start : start + 200]
            replies = await asyncio.gather(*(self._get(f"/Users/{uid}") for uid in chunk))
            for uid, (status, body) in zip(chunk, replies, strict=True):
                if uid in gone:
                    problems += status != 404
                else:
                    problems += status != 200 or body.get("active") is (uid in inactive)
        expected_members = len(ids) - len(gone)
        members = 0
        for group_id in group_ids:
            status, body = await self._get(f"/Groups/{group_id}")
            members += len(body.get("members", [])) if status == 200 else 0
        return {
            "users_checked": len(ids),
            "problems": problems,
            "members_expected": expected_members,
            "members_found": members,
            "ok": problems == 0 and members == expected_members,
        }

    async def _get(self, path: str) -> tuple[int, Any]:
        async with self.limit, self.http.get(self.url + path) as reply:
            body = await reply.json(content_type=None) if reply.status == 200 else None
            return reply.status, body or {}


async def post_users(url: str, count: int, concurrency: int, prefix: str) -> dict[str, Any]:
    """Only POST /Users: the like-for-like measure against the bare handler."""
    async with aiohttp.ClientSession(headers=_headers()) as http:
        load = Load(http, url, concurrency)
        started = time.perf_counter()
        await load.gather(
            [
                load.call(
                    "POST /Users",
                    "POST",
                    "/Users",
                    {"schemas": [USER], "userName": f"{prefix}{i}@example.com", "active": True},
                )
                for i in range(count)
            ]
        )
        load.stats.seconds = time.perf_counter() - started
        return load.stats.report()


def _headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/scim+json"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def _child(*args: str, port: int, base: str = "/scim/v2") -> AsyncIterator[str]:
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        async with asyncio.timeout(30), aiohttp.ClientSession() as http:
            while True:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/"):
                        break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}{base}"
    finally:
        process.terminate()
        await process.wait()


async def _against(url: str, users: int, groups: int, concurrency: int) -> dict[str, Any]:
    async with aiohttp.ClientSession(headers=_headers()) as http:
        return await Load(http, url, concurrency).run(users, groups)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"users": args.users, "groups": args.groups}
    result["concurrency"] = args.concurrency
    with tempfile.TemporaryDirectory() as tmp:
        if args.url:
            result["jmlsync"] = await _against(args.url, args.users, args.groups, args.concurrency)
        else:
            config = write_config(Path(tmp), RULES)
            async with running(config) as url:
                result["jmlsync"] = await _against(url, args.users, args.groups, args.concurrency)
                result["jmlsync_post_users"] = await post_users(
                    url, args.users, args.concurrency, "solo"
                )
    port = _free_port()
    async with _child(sys.executable, "-c", BARE_SERVER, str(port), port=port) as bare:
        result["bare_aiohttp_post"] = await post_users(bare, args.users, args.concurrency, "b")
    if args.compare_scim2_server:
        port = _free_port()
        async with _child(
            sys.executable,
            "-m",
            "scim2_server.testserver.cli",
            "--port",
            str(port),
            "--bearer-token",
            TOKEN,
            port=port,
            base="",
        ) as reference:
            result["scim2_server"] = await _against(
                reference, args.users, args.groups, args.concurrency
            )
    result["ratios"] = _ratios(result)
    return result


def _ratios(result: dict[str, Any]) -> dict[str, float]:
    ratios = {}
    solo = result.get("jmlsync_post_users")
    bare = result.get("bare_aiohttp_post")
    if solo and bare:
        ratios["post_users_vs_bare_aiohttp"] = round(
            solo["requests_per_s"] / bare["requests_per_s"], 3
        )
    if "scim2_server" in result:
        ratios["mixed_vs_scim2_server"] = round(
            result["jmlsync"]["requests_per_s"] / result["scim2_server"]["requests_per_s"], 2
        )
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="SCIM base URL of a running server (token: --token-file)")
    parser.add_argument("--token-file", type=Path)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--groups", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--compare-scim2-server", action="store_true")
    args = parser.parse_args()
    if args.token_file:
        global TOKEN
        TOKEN = args.token_file.read_text().split()[0]
    print(json.dumps(asyncio.run(main_async(args)), indent=2))


if __name__ == "__main__":
    main()
