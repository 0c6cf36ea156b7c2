"""Leaver latency: from the SCIM response of a deactivation to `cleared_at` on the ledger.

    .venv/bin/python -m benchmarks.leaver_latency --users 300 --leavers 200 --rate 50

Starts a real `jmlsync serve` (SQLite store, ledger target, one rule), provisions ``--users``
users into a mapped group and waits until every grant is applied, then deactivates
``--leavers`` of them at ``--rate`` per second the way Entra does (`"active": "False"`),
optionally with ``--background`` concurrent clients creating and updating other users
meanwhile. Reports p50/p90/p99/max of response → cleared_at, and of left_at → cleared_at.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from benchmarks._service import TOKEN, running, write_config

RULES = """
[pipeline]
poll_seconds = 0.5

[targets.ledger]
kind = "ledger"
path = "ledger.db"

[[rules]]
group = "engineering"
grants = [{ target = "ledger", role = "developer" }]
"""
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)

    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p90_ms": at(0.90),
        "p99_ms": at(0.99),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


async def _wait_for(check: Callable[[], bool], limit: float) -> None:
    """Poll another process's database: there is no event to await across processes."""
    async with asyncio.timeout(limit):
        while not check():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


def _granted(ledger: Path) -> int:
    with sqlite3.connect(f"file:{ledger}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT count(*) FROM grants").fetchone()[0])


def _leaver_rows(db: Path) -> dict[str, tuple[str, str | None]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT user_name, left_at, cleared_at FROM leavers").fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


async def run(users: int, leavers: int, rate: float, background: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = write_config(folder, RULES)
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/scim+json"}
        async with running(config) as url, aiohttp.ClientSession(headers=headers) as http:
            ids = await _provision(http, url, users)
            await _wait_for(lambda: _granted(folder / "ledger.db") >= users, 120)
            stop = asyncio.Event()
            noise = [
                asyncio.create_task(_background(http, url, n, stop)) for n in range(background)
            ]
            answered: dict[str, datetime] = {}
            interval = 1 / rate
            started = time.perf_counter()
            for index, (name, user_id) in enumerate(list(ids.items())[:leavers]):
                await asyncio.sleep(max(0.0, started + index * interval - time.perf_counter()))
                body = {
                    "schemas": [PATCH_OP],
                    "Operations": [{"op": "Replace", "path": "active", "value": "False"}],
                }
                async with http.patch(f"{url}/Users/{user_id}", json=body) as reply:
                    assert reply.status == 200, await reply.text()
                    answered[name] = datetime.now(UTC)
            db = folder / "jmlsync.db"
            await _wait_for(
                lambda: sum(1 for _, c in _leaver_rows(db).values() if c) >= leavers, 120
            )
            stop.set()
            background_requests = sum(await asyncio.gather(*noise))
            rows = _leaver_rows(db)
    from_response = [(_parse(rows[n][1]) - t).total_seconds() for n, t in answered.items()]  # type: ignore[arg-type]
    from_left = [(_parse(c) - _parse(left)).total_seconds() for left, c in rows.values() if c]
    return {
        "users": users,
        "leavers": leavers,
        "rate_per_s": rate,
        "background_clients": background,
        "background_requests": background_requests,
        "response_to_cleared": _percentiles(from_response),
        "left_at_to_cleared": _percentiles(from_left),
    }


async def _provision(http: aiohttp.ClientSession, url: str, users: int) -> dict[str, str]:
    ids: dict[str, str] = {}
    for index in range(users):
        name = f"leaver{index}@example.com"
        async with http.post(f"{url}/Users", json={"schemas": [USER], "userName": name}) as reply:
            ids[name] = (await reply.json())["id"]
    members = [{"value": user_id} for user_id in ids.values()]
    group = {"schemas": [GROUP], "displayName": "engineering", "members": members}
    async with http.post(f"{url}/Groups", json=group) as reply:
        assert reply.status == 201, await reply.text()
    return ids


async def _background(
    http: aiohttp.ClientSession, url: str, client: int, stop: asyncio.Event
) -> int:
    """Create a user and update it, over and over, until told to stop."""
    count = 0
    while not stop.is_set():
        name = f"noise{client}-{count}@example.com"
        async with http.post(f"{url}/Users", json={"schemas": [USER], "userName": name}) as reply:
            user_id = (await reply.json())["id"]
        body = {"schemas": [PATCH_OP], "Operations": [{"op": "add", "path": "title", "value": "x"}]}
        async with http.patch(f"{url}/Users/{user_id}", json=body) as reply:
            await reply.read()
        count += 2
    return count


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--leavers", type=int, default=200)
    parser.add_argument("--rate", type=float, default=50.0, help="deactivations per second")
    parser.add_argument("--background", type=int, default=0, help="concurrent noise clients")
    args = parser.parse_args()
    result = asyncio.run(run(args.users, args.leavers, args.rate, args.background))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
