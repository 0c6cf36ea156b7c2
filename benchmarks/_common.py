"""Shared pieces of the outside-the-process benchmarks: child servers, rounds, summaries, output."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"
_LISTENING = re.compile(r"listening on (http://\S+)")


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark shares."""
    made = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    made.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    made.add_argument("--json", type=Path, metavar="FILE", help="also write the result here")
    return made


def emit(result: dict[str, Any], path: Path | None) -> None:
    """Print the result as JSON on stdout (and into ``path`` if given)."""
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")


def spread(values: Iterable[float], digits: int = 1) -> dict[str, float]:
    """min/median/max of one figure over the rounds."""
    ordered = sorted(values)
    if not ordered:
        return {}
    return {
        "min": round(ordered[0], digits),
        "median": round(statistics.median(ordered), digits),
        "max": round(ordered[-1], digits),
    }


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50/p90/p99/max in milliseconds of samples in seconds (nearest rank)."""
    if not samples:
        return {"count": 0}
    ordered = sorted(samples)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)

    return {
        "count": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p90_ms": at(0.90),
        "p99_ms": at(0.99),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


def verdict(name: str, value: float | None, target: float, *, below: bool) -> dict[str, Any]:
    """One target's pass/fail line: ``value`` must be below (or at least) ``target``."""
    if value is None:
        return {"target": name, "value": None, "pass": False}
    ok = value < target if below else value >= target
    return {"target": name, "value": value, "pass": ok}


@asynccontextmanager
async def pg_database() -> AsyncIterator[str]:
    """A new, empty PostgreSQL database on the local server; dropped afterwards."""
    import asyncpg  # type: ignore[import-untyped]

    name = f"jmlsync_bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(ADMIN_DSN, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def pg_available() -> bool:
    import asyncpg

    try:
        conn = await asyncpg.connect(ADMIN_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


@asynccontextmanager
async def child_until(
    args: list[str], found: Callable[[str], str | None], *, env: dict[str, str] | None = None
) -> AsyncIterator[str]:
    """Start a child process, yield what ``found`` extracts from the first line it matches in
    the child's combined output (a URL), drain the rest; terminate the child afterwards."""
    process = await asyncio.create_subprocess_exec(
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    assert process.stdout is not None
    seen: list[str] = []
    value = None
    try:
        async with asyncio.timeout(60):
            while value is None:
                line = (await process.stdout.readline()).decode("utf-8", "replace")
                if not line:
                    tail = "".join(seen[-20:])
                    raise RuntimeError(f"{args[:4]} exited before it was ready:\n{tail}")
                seen.append(line)
                value = found(line)
    except BaseException:
        process.kill()
        await process.wait()
        raise

    async def drain() -> None:
        assert process.stdout is not None
        async for _ in process.stdout:
            pass

    drained = asyncio.create_task(drain())
    try:
        yield value
    finally:
        if process.returncode is None:
            process.terminate()
        try:
            async with asyncio.timeout(15):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()
        await drained


@asynccontextmanager
async def ceiling_app(kind: str, folder: Path) -> AsyncIterator[str]:
    """One of benchmarks/ceiling_apps.py's servers; yields its SCIM base URL."""

    def found(line: str) -> str | None:
        match = _LISTENING.search(line)
        return match.group(1) if match else None

    args = [sys.executable, "-m", "benchmarks.ceiling_apps", kind, "--db", str(folder / "c.db")]
    async with child_until(args, found) as url:
        yield url


@asynccontextmanager
async def scim2_server(token: str) -> AsyncIterator[str]:
    """The reference server scim2-server as a child process; yields its SCIM base URL.

    Its CLI cannot report a port it was given as 0, so a free one is picked first; it is
    ready once it answers its ServiceProviderConfig."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "scim2_server.testserver.cli",
        "--hostname",
        "127.0.0.1",
        "--port",
        str(port),
        "--bearer-token",
        token,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with asyncio.timeout(30), aiohttp.ClientSession(headers=headers) as http:
            while True:
                if process.returncode is not None:
                    raise RuntimeError(f"scim2-server exited with {process.returncode}")
                try:
                    async with http.get(f"{url}/ServiceProviderConfig") as reply:
                        if reply.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)  # polling a port: no event to await
        yield url
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()
