"""Mixed joiner-mover-leaver SCIM load, from outside the process, against three servers.

    .venv/bin/python -m benchmarks.mixed_jml --users 2000 --rounds 3

Each round starts fresh servers, one after the other: a real `jmlsync serve` on a SQLite store
(synchronous = FULL), the same on a PostgreSQL store (a new database on 127.0.0.1:5432), both
with the ledger target and one rule; and the reference server `scim2-server`. The same client
then runs the same load against each: 16 concurrent clients (one connection each), a phase at
a time:

  creates      POST /Users, --users of them
  groups       POST /Groups, --groups of them, empty
  member adds  PATCH /Groups add, --batch members per PATCH, every user in one group
  leavers      PATCH /Users active "False" (as Entra sends it), 30% of the users
  deletes      DELETE /Users, 10% of the users (other than the leavers)
  verify       GET every user and every group: each is as the client expects (deleted users
               404, leavers inactive, every group holds exactly its surviving members)

requests/s counts every request of every phase, verify included. A non-2xx answer where a 2xx
was expected is an error; a read-back that differs from the client's expectation is a
verify problem. Rounds are interleaved (jmlsync-sqlite, jmlsync-pg, scim2-server, repeat) so a
noisy neighbour hurts all three alike; min/median/max are over rounds.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks._common import (
    emit,
    parser,
    pg_available,
    pg_database,
    scim2_server,
    spread,
    verdict,
)
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
SERVERS = ("jmlsync-sqlite", "jmlsync-pg", "scim2-server")


def headers(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}


def session(token: str = TOKEN, connections: int = 16) -> aiohttp.ClientSession:
    """The one client every server gets: ``connections`` keep-alive connections."""
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    return aiohttp.ClientSession(headers=headers(token), connector=connector)


@dataclass
class Tally:
    """Latencies, requests and errors per operation."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    error_samples: list[str] = field(default_factory=list)

    def record(self, op: str, seconds: float, ok: bool, detail: str = "") -> None:
        self.latencies[op].append(seconds)
        if not ok:
            self.errors[op] += 1
            if len(self.error_samples) < 5:
                self.error_samples.append(f"{op}: {detail[:200]}")

    @property
    def requests(self) -> int:
        return sum(len(v) for v in self.latencies.values())

    def operations(self) -> dict[str, Any]:
        ops = {}
        for op, samples in self.latencies.items():
            ordered = sorted(samples)
            ops[op] = {
                "requests": len(ordered),
                "p50_ms": round(statistics.median(ordered) * 1000, 2),
                "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000, 2),
                "errors": self.errors.get(op, 0),
            }
        return ops


class Mix:
    """The JML mix against one SCIM base URL, remembering what it expects the server to hold.

    ``run`` may be called again on the same server (the leaver benchmark's background does):
    the groups are made once and reused, new users get new names."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        url: str,
        *,
        users: int,
        groups: int,
        batch: int = 10,
        concurrency: int = 16,
        prefix: str = "mix",
    ) -> None:
        self.http = http
        self.url = url.rstrip("/")
        self.users, self.groups, self.batch = users, groups, batch
        self.concurrency = concurrency
        self.prefix = prefix
        self.tally = Tally()
        self.iteration = 0
        self.group_ids: list[str] = []
        self.members: dict[str, set[str]] = {}
        self.stopping: asyncio.Event | None = None

    async def request(
        self, op: str, method: str, path: str, body: Any = None, expect: int = 200
    ) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        started = time.perf_counter()
        try:
            async with self.http.request(method, self.url + path, data=data) as reply:
                raw = await reply.read()
                status = reply.status
        except aiohttp.ClientError as exc:
            self.tally.record(op, time.perf_counter() - started, False, repr(exc))
            return 0, None
        ok = status == expect or (expect == 200 and 200 <= status < 300)
        self.tally.record(op, time.perf_counter() - started, ok, f"{status} {raw[:150]!r}")
        try:
            return status, json.loads(raw) if raw and status < 300 else None
        except ValueError:
            return status, None

    async def phase(self, calls: list[Callable[[], Awaitable[Any]]]) -> list[Any]:
        """Run ``calls`` on ``concurrency`` clients, each taking the next call when free."""
        results: list[Any] = [None] * len(calls)
        cursor = iter(range(len(calls)))

        async def client() -> None:
            for index in cursor:
                results[index] = await calls[index]()

        await asyncio.gather(*(client() for _ in range(self.concurrency)))
        return results

    async def run(self) -> dict[str, Any]:
        """One pass of the mix; returns its figures and the read-back check."""
        tag = f"{self.prefix}{self.iteration}"
        self.iteration += 1
        before = self.tally.requests
        started = time.perf_counter()

        def create(i: int) -> Callable[[], Awaitable[Any]]:
            name = f"{tag}-{i}@example.com"
            body = {
                "schemas": [USER],
                "userName": name,
                "active": True,
                "name": {"givenName": "Load", "familyName": str(i)},
                "emails": [{"value": name, "type": "work"}],
            }
            return lambda: self.request("POST /Users", "POST", "/Users", body, 201)

        created = await self.phase([create(i) for i in range(self.users)])
        ids = [body["id"] for status, body in created if body and "id" in body]
        names = {body["id"]: body.get("userName") for _, body in created if body and "id" in body}
        if not self.group_ids:
            made = await self.phase(
                [
                    (
                        lambda g=g: self.request(
                            "POST /Groups",
                            "POST",
                            "/Groups",
                            {"schemas": [GROUP], "displayName": f"{self.prefix}-group-{g}"},
                            201,
                        )
                    )
                    for g in range(self.groups)
                ]
            )
            self.group_ids = [body["id"] for _, body in made if body and "id" in body]
            self.members = {gid: set() for gid in self.group_ids}
        await self.phase(self._member_adds(ids))
        leavers = ids[: len(ids) * 3 // 10]
        deleted = ids[len(ids) - len(ids) // 10 :]
        deactivate = {
            "schemas": [PATCH_OP],
            "Operations": [{"op": "Replace", "path": "active", "value": "False"}],
        }
        await self.phase(
            [
                (
                    lambda uid=uid: self.request(
                        "PATCH /Users (deactivate)", "PATCH", f"/Users/{uid}", deactivate
                    )
                )
                for uid in leavers
            ]
        )
        await self.phase(
            [
                (
                    lambda uid=uid: self.request(
                        "DELETE /Users", "DELETE", f"/Users/{uid}", None, 204
                    )
                )
                for uid in deleted
            ]
        )
        for members in self.members.values():
            members.difference_update(deleted)
        check = await self._verify(ids, names, set(leavers), set(deleted))
        seconds = time.perf_counter() - started
        requests = self.tally.requests - before
        return {
            "requests": requests,
            "seconds": round(seconds, 3),
            "requests_per_s": round(requests / seconds, 1),
            "check": check,
        }

    def _member_adds(self, ids: list[str]) -> list[Callable[[], Awaitable[Any]]]:
        calls: list[Callable[[], Awaitable[Any]]] = []
        if not self.group_ids:
            return calls
        for g, group_id in enumerate(self.group_ids):
            joining = ids[g :: len(self.group_ids)]
            for start in range(0, len(joining), self.batch):
                batch = joining[start : start + self.batch]
                body = {
                    "schemas": [PATCH_OP],
                    "Operations": [
                        {"op": "add", "path": "members", "value": [{"value": u} for u in batch]}
                    ],
                }
                self.members[group_id].update(batch)
                calls.append(
                    lambda gid=group_id, body=body: self.request(
                        f"PATCH /Groups (add {self.batch})", "PATCH", f"/Groups/{gid}", body
                    )
                )
        return calls

    async def _verify(
        self, ids: list[str], names: dict[str, Any], leavers: set[str], deleted: set[str]
    ) -> dict[str, Any]:
        problems: list[str] = []

        async def user(uid: str) -> None:
            expect = 404 if uid in deleted else 200
            status, body = await self.request(
                "GET /Users/{id}", "GET", f"/Users/{uid}", None, expect
            )
            if uid in deleted:
                if status != 404:
                    problems.append(f"deleted user {uid} answers {status}")
                return
            if status != 200 or body is None:
                problems.append(f"user {uid} answers {status}")
            elif body.get("userName") != names[uid]:
                problems.append(f"user {uid} userName {body.get('userName')!r}")
            elif body.get("active") is not (uid not in leavers):
                problems.append(f"user {uid} active {body.get('active')!r}")

        async def group(gid: str) -> None:
            status, body = await self.request("GET /Groups/{id}", "GET", f"/Groups/{gid}")
            if status != 200 or body is None:
                problems.append(f"group {gid} answers {status}")
                return
            found = [m.get("value") for m in body.get("members") or []]
            if len(found) != len(set(found)) or set(found) != self.members[gid]:
                missing = len(self.members[gid] - set(found))
                extra = len(set(found) - self.members[gid])
                problems.append(
                    f"group {gid}: {len(found)} members, {missing} missing, {extra} unexpected"
                    f" (deleted users kept: {len(set(found) & deleted)})"
                )

        calls: list[Callable[[], Awaitable[Any]]] = [(lambda u=u: user(u)) for u in ids]
        calls += [(lambda g=g: group(g)) for g in self.group_ids]
        await self.phase(calls)
        return {
            "users_checked": len(ids),
            "groups_checked": len(self.group_ids),
            "members_expected": sum(len(m) for m in self.members.values()),
            "problems": len(problems),
            "problem_samples": problems[:5],
            "ok": not problems and len(ids) == self.users,
        }


@asynccontextmanager
async def server(kind: str, folder: Path) -> AsyncIterator[str]:
    """A fresh server of ``kind`` (one of SERVERS); yields its SCIM base URL."""
    if kind == "scim2-server":
        async with scim2_server(TOKEN) as url:
            yield url
    elif kind == "jmlsync-pg":
        async with pg_database() as dsn, running(write_config(folder, RULES, dsn)) as url:
            yield url
    else:
        async with running(write_config(folder, RULES)) as url:
            yield url


async def one_round(kind: str, args: Any) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-mixed-") as tmp:
        async with server(kind, Path(tmp)) as url, session(connections=args.concurrency) as http:
            mix = Mix(
                http,
                url,
                users=args.users,
                groups=args.groups,
                batch=args.batch,
                concurrency=args.concurrency,
            )
            figures = await mix.run()
            errors = sum(mix.tally.errors.values())
            return {
                **figures,
                "errors": errors,
                "error_samples": mix.tally.error_samples,
                "operations": mix.tally.operations(),
            }


def summarise(kind: str, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "requests_per_s": spread(r["requests_per_s"] for r in rounds),
        "requests_per_round": rounds[0]["requests"] if rounds else 0,
        "errors_total": sum(r["errors"] for r in rounds),
        "verify_clean_rounds": sum(1 for r in rounds if r["check"]["ok"]),
        "rounds": rounds,
    }


async def main_async(args: Any) -> dict[str, Any]:
    servers = [s for s in SERVERS if s in args.servers]
    skipped = []
    if "jmlsync-pg" in servers and not await pg_available():
        servers.remove("jmlsync-pg")
        skipped.append("jmlsync-pg: no PostgreSQL server on 127.0.0.1:5432")
    results: dict[str, list[dict[str, Any]]] = {s: [] for s in servers}
    for number in range(args.rounds):
        for kind in servers:
            figures = await one_round(kind, args)
            results[kind].append(figures)
            verified = "ok" if figures["check"]["ok"] else "FAILED"
            print(
                f"round {number + 1} {kind}: {figures['requests_per_s']} req/s,"
                f" {figures['errors']} errors, verify {verified}",
                file=sys.stderr,
            )
    summary = {kind: summarise(kind, rounds) for kind, rounds in results.items()}
    ratios: dict[str, float] = {}
    targets = []
    reference = summary.get("scim2-server", {}).get("requests_per_s", {}).get("median")
    for kind, need in (("jmlsync-sqlite", 5.0), ("jmlsync-pg", 3.0)):
        if kind not in summary or not reference:
            continue
        ratio = round(summary[kind]["requests_per_s"]["median"] / reference, 2)
        ratios[f"{kind}_vs_scim2_server"] = ratio
        clean = (
            summary[kind]["errors_total"] == 0
            and summary[kind]["verify_clean_rounds"] == args.rounds
        )
        line = verdict(
            f"{kind} >= {need}x scim2-server, 0 errors, verify clean", ratio, need, below=False
        )
        line["pass"] = line["pass"] and clean
        line["errors"] = summary[kind]["errors_total"]
        line["verify_clean_rounds"] = summary[kind]["verify_clean_rounds"]
        targets.append(line)
    return {
        "benchmark": "mixed_jml",
        "users": args.users,
        "groups": args.groups,
        "batch": args.batch,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "skipped": skipped,
        "servers": summary,
        "ratios": ratios,
        "targets": targets,
    }


def main() -> None:
    made = parser(__doc__)
    made.add_argument("--users", type=int, default=2000)
    made.add_argument("--groups", type=int, default=20)
    made.add_argument("--batch", type=int, default=10, help="members per PATCH (default 10)")
    made.add_argument("--concurrency", type=int, default=16)
    made.add_argument(
        "--servers",
        default=",".join(SERVERS),
        type=lambda text: [s for s in text.split(",") if s],
        help=f"comma-separated, of {','.join(SERVERS)} (default all)",
    )
    args = made.parse_args()
    unknown = set(args.servers) - set(SERVERS)
    if unknown:
        made.error(f"unknown servers: {', '.join(sorted(unknown))}")
    emit(asyncio.run(main_async(args)), args.json)


if __name__ == "__main__":
    main()
