"""Planning at scale: users, groups and memberships generated, then one full dry-run plan.

    .venv/bin/python -m benchmarks.reconcile_scale --users 100000 --groups 5000 \\
        --memberships 1000000 --rules 1000

The directory (and a ledger holding 50,000 principals with one random grant each) is generated
by a child process; this process then plans one full reconciliation against it, so its peak RSS
is planning alone. Reports plan time and peak memory. With --apply it also applies the plan
through the ledger (a full reconciliation) and counts the target calls: the grant, revoke and
disable calls must equal the size of the diff.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from jmlsync.config import load_settings
from jmlsync.engine.reconcile import Scope
from jmlsync.runtime import open_runtime
from jmlsync.store.directory import SqlStore
from jmlsync.targets.ledger import LedgerTarget

STAMP = "2026-01-01T00:00:00.000000Z"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"


def write_config(folder: Path, rules: int) -> Path:
    lines = [
        '[store]\nurl = "sqlite:///jmlsync.db"\n',
        '[targets.ledger]\nkind = "ledger"\npath = "ledger.db"\n',
    ]
    for index in range(rules):
        lines.append(
            f'[[rules]]\ngroup = "group-{index}"\n'
            f'grants = [{{ target = "ledger", role = "role-{index % 200}" }}]\n'
        )
    config = folder / "jmlsync.toml"
    config.write_text("\n".join(lines))
    return config


def _users(count: int) -> list[tuple[str, str, str, int, str, str, str]]:
    rows = []
    for i in range(count):
        name = f"user{i}@example.com"
        doc = json.dumps({"schemas": [USER_SCHEMA], "userName": name, "active": i % 50 != 0})
        rows.append((str(uuid.uuid4()), name, name, int(i % 50 != 0), doc, STAMP, STAMP))
    return rows


def generate(folder: Path, users: int, groups: int, memberships: int, rules: int) -> None:
    """Fill the store and the ledger of ``folder`` (run in a child process)."""
    config = load_settings(folder / "jmlsync.toml")

    async def migrate() -> None:
        store = await SqlStore.open(config.store.sqlite_path)
        await store.close()
        ledger = await LedgerTarget.open("ledger", folder / "ledger.db")
        await ledger.close()

    asyncio.run(migrate())
    rng = random.Random(7)
    user_rows = _users(users)
    group_ids = [str(uuid.uuid4()) for _ in range(groups)]
    with sqlite3.connect(config.store.sqlite_path) as conn:
        conn.executemany(
            "INSERT INTO users (id, user_name, user_name_key, active, doc, created,"
            " last_modified) VALUES (?, ?, ?, ?, ?, ?, ?)",
            user_rows,
        )
        conn.executemany(
            "INSERT INTO groups (id, display_name, display_name_key, doc, created, last_modified)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                (
                    gid,
                    f"group-{i}",
                    f"group-{i}",
                    json.dumps({"schemas": [GROUP_SCHEMA], "displayName": f"group-{i}"}),
                    STAMP,
                    STAMP,
                )
                for i, gid in enumerate(group_ids)
            ),
        )
        per_user = memberships // users
        pairs = (
            (group_ids[g], row[0]) for row in user_rows for g in rng.sample(range(groups), per_user)
        )
        conn.executemany("INSERT INTO memberships (group_id, user_id) VALUES (?, ?)", pairs)
    with sqlite3.connect(folder / "ledger.db") as ledger:
        ledger.executemany(
            "INSERT INTO principals (user, enabled) VALUES (?, 1)",
            ((row[1],) for row in user_rows[::2]),
        )
        ledger.executemany(
            "INSERT OR IGNORE INTO grants (user, role, granted_at) VALUES (?, ?, ?)",
            ((row[1], f"role-{rng.randrange(200)}", STAMP) for row in user_rows[::2]),
        )


class CountingTarget:
    """Counts the calls the engine makes to a target (a benchmark probe, not a fake)."""

    def __init__(self, target: Any) -> None:
        self._target = target
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._target, name)
        if not callable(attribute):
            return attribute

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attribute(*args, **kwargs)

        return counted


async def plan_once(config: Path, apply: bool) -> dict[str, object]:
    settings = load_settings(config)
    async with open_runtime(settings) as runtime:
        counting = CountingTarget(runtime.targets["ledger"])
        runtime.applier.targets = {"ledger": counting}  # type: ignore[dict-item]
        runtime.reconciler.targets = runtime.applier.targets
        started = time.perf_counter()
        snapshot = await runtime.reconciler.snapshot(Scope())
        plan_seconds = time.perf_counter() - started
        operations = snapshot.operations
        result: dict[str, object] = {
            **snapshot.counts,
            "operations": len(operations),
            "grant": sum(1 for op in operations if op.action == "grant"),
            "revoke": sum(1 for op in operations if op.action == "revoke"),
            "disable": sum(1 for op in operations if op.action == "disable"),
            "plan_s": round(plan_seconds, 2),
        }
        if apply:
            counting.calls.clear()
            outcomes = await runtime.reconciler.apply(operations)
            write_calls = sum(counting.calls[m] for m in ("grant", "revoke", "disable_principal"))
            result.update(
                full_reconcile_s=round(time.perf_counter() - started, 2),
                applied=sum(1 for o in outcomes if o.ok),
                failed=sum(1 for o in outcomes if not o.ok),
                target_write_calls=write_calls,
                target_calls_equal_diff=write_calls == len(operations),
                ensure_principal_calls=counting.calls["ensure_principal"],
            )
            again = time.perf_counter()
            converged = await runtime.reconciler.snapshot(Scope())
            result.update(
                converged_reconcile_s=round(time.perf_counter() - again, 2),
                converged_operations=len(converged.operations),
            )
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=5_000)
    parser.add_argument("--memberships", type=int, default=1_000_000)
    parser.add_argument("--rules", type=int, default=1_000)
    parser.add_argument(
        "--apply", action="store_true", help="also apply the plan: a full reconciliation"
    )
    parser.add_argument("--generate-into", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate_into:
        generate(args.generate_into, args.users, args.groups, args.memberships, args.rules)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = write_config(folder, args.rules)
        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.reconcile_scale",
                *sys.argv[1:],
                "--generate-into",
                tmp,
            ],
            check=True,
        )
        generated = time.perf_counter() - started
        result = asyncio.run(plan_once(config, args.apply))
    print(
        json.dumps(
            {"generate_s": round(generated, 1), **vars(args), **result}, default=str, indent=2
        )
    )


if __name__ == "__main__":
    main()
