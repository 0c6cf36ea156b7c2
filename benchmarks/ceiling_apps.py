"""Yardstick servers for POST /Users: what aiohttp alone, and aiohttp plus one durable SQLite
insert, can do on this machine.

    .venv/bin/python -m benchmarks.ceiling_apps bare
    .venv/bin/python -m benchmarks.ceiling_apps sqlite --db var/bench/ceiling.db

Both answer ``POST /scim/v2/Users`` with 201 and a body like jmlsync's (the request's
attributes plus id and meta), checking the bearer token and parsing the JSON. ``sqlite`` also
inserts one row per request into a table with a unique userName, in WAL mode with
``synchronous = FULL`` and a commit per request (on disk before the answer, as jmlsync
acknowledges a write), on the event loop's thread: the cheapest durable insert there is.
A duplicate userName answers 409. Prints ``listening on http://127.0.0.1:PORT/scim/v2``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sqlite3
import uuid
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

from benchmarks._service import TOKEN

BEARER = f"Bearer {TOKEN}"


def _resource(body: dict[str, object], request: web.Request) -> dict[str, object]:
    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    user_id = str(uuid.uuid4())
    return {
        **body,
        "id": user_id,
        "meta": {
            "resourceType": "User",
            "created": stamp,
            "lastModified": stamp,
            "location": f"{request.scheme}://{request.host}/scim/v2/Users/{user_id}",
            "version": 'W/"1"',
        },
    }


def _reply(status: int, payload: dict[str, object]) -> web.Response:
    return web.Response(
        body=json.dumps(payload).encode(), status=status, content_type="application/scim+json"
    )


def bare_app() -> web.Application:
    async def create(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != BEARER:
            return _reply(401, {"detail": "unauthorized"})
        body = json.loads(await request.read())
        return _reply(201, _resource(body, request))

    app = web.Application()
    app.router.add_post("/scim/v2/Users", create)
    return app


def sqlite_app(path: Path) -> web.Application:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY, user_name TEXT NOT NULL UNIQUE,"
        " doc TEXT NOT NULL)"
    )

    async def create(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != BEARER:
            return _reply(401, {"detail": "unauthorized"})
        body = json.loads(await request.read())
        resource = _resource(body, request)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT INTO users (id, user_name, doc) VALUES (?, ?, ?)",
                (resource["id"], body.get("userName"), json.dumps(resource)),
            )
            conn.execute("COMMIT")
        except sqlite3.IntegrityError:
            conn.execute("ROLLBACK")
            return _reply(409, {"detail": "userName taken", "scimType": "uniqueness"})
        return _reply(201, resource)

    app = web.Application()
    app.router.add_post("/scim/v2/Users", create)
    app.on_cleanup.append(lambda _: asyncio.sleep(0, conn.close()))
    return app


async def serve(app: web.Application) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"listening on http://127.0.0.1:{port}/scim/v2", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    made = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    made.add_argument("kind", choices=("bare", "sqlite"))
    made.add_argument("--db", type=Path, default=Path("ceiling.db"), help="sqlite: the file")
    args = made.parse_args()
    app = bare_app() if args.kind == "bare" else sqlite_app(args.db)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(app))


if __name__ == "__main__":
    main()
