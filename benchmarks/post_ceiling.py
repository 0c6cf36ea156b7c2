"""POST /Users at 16 connections: jmlsync against the framework's ceiling on this machine.

    .venv/bin/python -m benchmarks.post_ceiling --requests 5000 --rounds 3

The same client (aiohttp, --connections keep-alive connections, each sending its next request
as soon as the last is answered, bodies encoded beforehand) against three servers, each a
child process started fresh per round, rounds interleaved:

  jmlsync         a real `jmlsync serve` (SQLite store, synchronous = FULL, the ledger target
                  and one rule that maps no group these users are in)
  bare-aiohttp    benchmarks/ceiling_apps.py bare: parse, add id and meta, answer 201
  aiohttp-sqlite  benchmarks/ceiling_apps.py sqlite: the same plus one SQLite insert per
                  request, WAL, synchronous = FULL, a commit per request

Reports requests/s, p50/p99 and errors per server, and jmlsync / aiohttp-sqlite (target:
at least 0.5). Before each server's run it times 100 fsyncs of the scratch folder
(``fsync_ms_before``): the aiohttp-sqlite ceiling is one fsync per request, so on a busy disk
it falls below jmlsync (which commits a batch of requests per fsync) and the ratio flatters.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks._common import ceiling_app, emit, parser, percentiles, spread, verdict
from benchmarks._service import TOKEN, running, write_config
from benchmarks.mixed_jml import RULES, USER, session

SERVERS = ("jmlsync", "bare-aiohttp", "aiohttp-sqlite")


@asynccontextmanager
async def server(kind: str, folder: Path) -> AsyncIterator[str]:
    if kind == "jmlsync":
        async with running(write_config(folder, RULES)) as url:
            yield url
    else:
        async with ceiling_app("bare" if kind == "bare-aiohttp" else "sqlite", folder) as url:
            yield url


async def post_users(
    http: aiohttp.ClientSession, url: str, bodies: list[bytes], connections: int
) -> dict[str, Any]:
    latencies: list[float] = []
    errors: list[str] = []
    cursor = iter(bodies)
    target = url.rstrip("/") + "/Users"

    async def client() -> None:
        for body in cursor:
            started = time.perf_counter()
            try:
                async with http.post(target, data=body) as reply:
                    await reply.read()
                    ok = reply.status == 201
                    status = reply.status
            except aiohttp.ClientError as exc:
                ok, status = False, repr(exc)  # type: ignore[assignment]
            latencies.append(time.perf_counter() - started)
            if not ok:
                errors.append(str(status))

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(connections)))
    seconds = time.perf_counter() - started
    return {
        "requests": len(bodies),
        "seconds": round(seconds, 3),
        "requests_per_s": round(len(bodies) / seconds, 1),
        "errors": len(errors),
        "error_samples": errors[:5],
        "latency": percentiles(latencies),
    }


def bodies(count: int, tag: str) -> list[bytes]:
    return [
        json.dumps(
            {
                "schemas": [USER],
                "userName": f"{tag}-{i}@example.com",
                "active": True,
                "name": {"givenName": "Post", "familyName": str(i)},
                "emails": [{"value": f"{tag}-{i}@example.com", "type": "work"}],
            }
        ).encode()
        for i in range(count)
    ]


def fsync_ms(folder: Path, count: int = 100) -> float:
    """Median milliseconds of one 4 KiB write + fsync in ``folder``: the aiohttp-sqlite
    ceiling is bound by it (a commit per request), so a busy disk shows here first."""
    samples = []
    with (folder / "fsync-probe").open("wb") as probe:
        for _ in range(count):
            started = time.perf_counter()
            probe.write(b"x" * 4096)
            probe.flush()
            os.fsync(probe.fileno())
            samples.append(time.perf_counter() - started)
    return round(statistics.median(samples) * 1000, 3)


async def main_async(args: Any) -> dict[str, Any]:
    results: dict[str, list[dict[str, Any]]] = {s: [] for s in SERVERS}
    for number in range(args.rounds):
        for kind in SERVERS:
            with tempfile.TemporaryDirectory(prefix="bench-post-") as tmp:
                probe = await asyncio.to_thread(fsync_ms, Path(tmp))
                async with server(kind, Path(tmp)) as url, session(TOKEN, args.connections) as http:
                    if args.warmup:
                        await post_users(http, url, bodies(args.warmup, "warm"), args.connections)
                    figures = await post_users(
                        http, url, bodies(args.requests, f"r{number}"), args.connections
                    )
            figures["fsync_ms_before"] = probe
            results[kind].append(figures)
            print(
                f"round {number + 1} {kind}: {figures['requests_per_s']} req/s,"
                f" fsync {probe} ms,"
                f" p99 {figures['latency'].get('p99_ms')} ms, {figures['errors']} errors",
                file=sys.stderr,
            )
    summary = {
        kind: {
            "requests_per_s": spread(r["requests_per_s"] for r in rounds),
            "p99_ms": spread(r["latency"]["p99_ms"] for r in rounds),
            "errors_total": sum(r["errors"] for r in rounds),
            "fsync_ms_before": spread((r["fsync_ms_before"] for r in rounds), 3),
            "rounds": rounds,
        }
        for kind, rounds in results.items()
    }
    median = {kind: summary[kind]["requests_per_s"]["median"] for kind in SERVERS}
    ratios = {
        "jmlsync_vs_aiohttp_sqlite": round(median["jmlsync"] / median["aiohttp-sqlite"], 3),
        "jmlsync_vs_bare_aiohttp": round(median["jmlsync"] / median["bare-aiohttp"], 3),
        "aiohttp_sqlite_vs_bare_aiohttp": round(
            median["aiohttp-sqlite"] / median["bare-aiohttp"], 3
        ),
    }
    line = verdict(
        "jmlsync POST /Users >= 0.5x aiohttp + one SQLite insert",
        ratios["jmlsync_vs_aiohttp_sqlite"],
        0.5,
        below=False,
    )
    line["pass"] = line["pass"] and summary["jmlsync"]["errors_total"] == 0
    return {
        "benchmark": "post_ceiling",
        "requests": args.requests,
        "warmup": args.warmup,
        "connections": args.connections,
        "rounds": args.rounds,
        "servers": summary,
        "ratios": ratios,
        "targets": [line],
    }


def main() -> None:
    made = parser(__doc__)
    made.add_argument("--requests", type=int, default=5000, help="timed POSTs per round")
    made.add_argument("--warmup", type=int, default=200, help="untimed POSTs first (default 200)")
    made.add_argument("--connections", type=int, default=16)
    args = made.parse_args()
    emit(asyncio.run(main_async(args)), args.json)


if __name__ == "__main__":
    main()
