"""How a large group behaves: lookups without members and membership PATCHes on 100k members.

    .venv/bin/python -m benchmarks.group_scale --members 100000 --rounds 200

Generates a store with one group of N members (written straight into SQLite, as a migrated
store would hold them), serves it in-process on a loopback port, and times over HTTP:
``GET /Groups/{id}?excludedAttributes=members``, the Entra lookup by displayName, a one-member
PATCH add and remove, and one full ``GET /Groups/{id}`` with every member.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestServer

from jmlsync.config import load_settings
from jmlsync.service import build_app
from jmlsync.store.directory import SqlStore

TOKEN = "bench-" + "x" * 40
STAMP = "2026-01-01T00:00:00.000000Z"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


async def populate(
    db_path: Path, members: int, group_name: str = "everyone"
) -> tuple[str, list[str]]:
    """Create a migrated store holding ``members`` users, all in one group; return the ids."""
    store = await SqlStore.open(db_path)
    await store.close()
    group_id = str(uuid.uuid4())
    user_ids = [str(uuid.uuid4()) for _ in range(members)]
    with sqlite3.connect(db_path) as conn:
        conn.executemany(
            "INSERT INTO users (id, user_name, user_name_key, active, doc, created, last_modified)"
            " VALUES (?, ?, ?, 1, ?, ?, ?)",
            (
                (uid, f"user{i}@example.com", f"user{i}@example.com", _user_doc(i), STAMP, STAMP)
                for i, uid in enumerate(user_ids)
            ),
        )
        doc = json.dumps(
            {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": group_name}
        )
        conn.execute(
            "INSERT INTO groups (id, display_name, display_name_key, doc, created, last_modified)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (group_id, group_name, group_name.casefold(), doc, STAMP, STAMP),
        )
        conn.executemany(
            "INSERT INTO memberships (group_id, user_id) VALUES (?, ?)",
            ((group_id, uid) for uid in user_ids),
        )
    return group_id, user_ids


def _user_doc(i: int) -> str:
    return json.dumps(
        {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": f"user{i}@example.com",
        }
    )


def write_config(folder: Path) -> Path:
    (folder / "tokens").write_text(TOKEN + "\n")
    (folder / "tokens").chmod(0o600)
    config = folder / "jmlsync.toml"
    config.write_text(
        '[server]\nlisten = "127.0.0.1:0"\ntokens_file = "tokens"\n'
        '[store]\nurl = "sqlite:///jmlsync.db"\n'
    )
    return config


async def _time(rounds: int, call: Callable[[], Awaitable[int]]) -> dict[str, float]:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        status = await call()
        samples.append((time.perf_counter() - started) * 1000)
        assert status < 300, status
    samples.sort()
    return {
        "p50_ms": round(statistics.median(samples), 2),
        "p99_ms": round(samples[int(len(samples) * 0.99) - 1], 2),
        "max_ms": round(samples[-1], 2),
    }


async def run(members: int, rounds: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = write_config(folder)
        started = time.perf_counter()
        group_id, user_ids = await populate(folder / "jmlsync.db", members)
        generated_s = time.perf_counter() - started
        server = TestServer(await build_app(load_settings(config)), host="127.0.0.1", port=0)
        await server.start_server()
        root = str(server.make_url("/scim/v2"))
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/scim+json"}
        outsider = user_ids[-1]
        try:
            async with aiohttp.ClientSession(headers=headers) as http:

                async def get(path: str) -> int:
                    async with http.get(root + path) as reply:
                        await reply.read()
                        return reply.status

                async def patch(op: dict[str, object]) -> int:
                    body = json.dumps({"schemas": [PATCH_OP], "Operations": [op]})
                    async with http.patch(f"{root}/Groups/{group_id}", data=body) as reply:
                        await reply.read()
                        return reply.status

                remove = {"op": "remove", "path": f'members[value eq "{outsider}"]'}
                add = {"op": "add", "path": "members", "value": [{"value": outsider}]}
                results: dict[str, object] = {
                    "members": members,
                    "generate_s": round(generated_s, 2),
                    "get_excluding_members": await _time(
                        rounds, lambda: get(f"/Groups/{group_id}?excludedAttributes=members")
                    ),
                    "filter_by_display_name": await _time(
                        rounds,
                        lambda: get(
                            '/Groups?excludedAttributes=members&filter=displayName eq "everyone"'
                        ),
                    ),
                    "patch_remove_one_member": await _time(rounds // 2, lambda: patch(remove)),
                    "patch_add_one_member": await _time(rounds // 2, lambda: patch(add)),
                    "get_with_all_members": await _time(3, lambda: get(f"/Groups/{group_id}")),
                }
        finally:
            await server.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.members, args.rounds)), indent=2))


if __name__ == "__main__":
    main()
