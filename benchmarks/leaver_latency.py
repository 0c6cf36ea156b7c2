"""Leaver latency and pipeline throughput, observed from outside the process.

    .venv/bin/python -m benchmarks.leaver_latency --rounds 3
    .venv/bin/python -m benchmarks.leaver_latency --target identity-center --rounds 3

Starts a real `jmlsync serve` (SQLite store, one rule mapping group "engineering" to a role)
per scenario, the target being the ledger or AWS Identity Center on moto in server mode (a
child `python -m moto.server`, emptied between scenarios). Scenarios, interleaved per round:

  idle      --users users provisioned into "engineering" and every grant applied; then
            --leavers of them are deactivated as Entra does it ("active": "False"), --rate
            per second. Latency: from the client holding the 200 answer of the deactivation
            to the moment the watcher sees the user hold no grant in the target (and, on the
            ledger, the principal disabled).
  loaded    the same while benchmarks/mixed_jml.py's mix runs in a loop on --background
            clients: creates, groups, member PATCHes of 10, deactivations, deletes and the
            read-back, its first group ("load-group-0") mapped to a role in the same target,
            so its own deactivations and member PATCHes are pipeline work too.
  pipeline  --burst users (not in any mapped group) are created and the target left to
            settle; then they all join "burst", mapped to two roles, in PATCHes of 100
            members: grant ops/s = 2 x --burst / (first PATCH sent → every grant in the
            target); then they all leave it again: revoke ops/s likewise.

The watcher reads the target, not jmlsync: the ledger's SQLite file (read-only, every
--poll-ms), or moto's ListAccountAssignments (as fast as moto answers; each pass's duration
is the resolution and is reported). The product's own `cleared_at` stamps are reported beside
(`store_cleared_at`). Targets: loaded p99 < 250 ms on the ledger, < 1 s on Identity Center;
pipeline >= 2,000 ops/s on the ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import botocore.exceptions

from benchmarks._common import child_until, emit, parser, percentiles, spread, verdict
from benchmarks._service import running, write_config
from benchmarks.mixed_jml import GROUP, PATCH_OP, USER, Mix, session

REGION = "us-east-1"
ACCOUNT = "123456789012"
ROLES = {"engineering": ["developer"], "load-group-0": ["loader"], "burst": ["burst-a", "burst-b"]}
DEACTIVATE = {
    "schemas": [PATCH_OP],
    "Operations": [{"op": "Replace", "path": "active", "value": "False"}],
}
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
}


class Moto:
    """moto in server mode: the permission sets the rules name, and reads of its assignments."""

    def __init__(self, url: str) -> None:
        import boto3  # type: ignore[import-untyped]

        self.url = url
        self.sso = boto3.client("sso-admin", region_name=REGION, endpoint_url=url, **_keys())
        self.store = boto3.client("identitystore", region_name=REGION, endpoint_url=url, **_keys())
        self.arns: dict[str, str] = {}

    def reset(self) -> None:
        import urllib.request

        request = urllib.request.Request(f"{self.url}/moto-api/reset", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=30):
            pass
        (found,) = self.sso.list_instances()["Instances"]
        self.instance, self.store_id = found["InstanceArn"], found["IdentityStoreId"]
        self.arns = {}
        for roles in ROLES.values():
            for role in roles:
                arn = self.sso.create_permission_set(InstanceArn=self.instance, Name=role)[
                    "PermissionSet"
                ]["PermissionSetArn"]
                self.sso.provision_permission_set(
                    InstanceArn=self.instance, PermissionSetArn=arn, TargetType="AWS_ACCOUNT"
                )
                self.arns[role] = arn

    def holders(self, roles: list[str]) -> list[str]:
        """Principal ids holding each of ``roles``, one entry per assignment."""
        found = []
        for role in roles:
            found += self._holders_of(role)
        return found

    def _holders_of(self, role: str) -> list[str]:
        """One role's holders; the listing starts again when a change between two pages
        invalidated moto's page token (the product deletes while the watcher lists)."""
        for _ in range(20):
            pages = self.sso.get_paginator("list_account_assignments").paginate(
                InstanceArn=self.instance, AccountId=ACCOUNT, PermissionSetArn=self.arns[role]
            )
            try:
                return [a["PrincipalId"] for page in pages for a in page["AccountAssignments"]]
            except botocore.exceptions.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "InvalidToken":
                    raise
        raise RuntimeError(f"moto kept invalidating the page token listing {role}")

    def user_ids(self) -> dict[str, str]:
        """userName -> Identity Store user id."""
        ids = {}
        pages = self.store.get_paginator("list_users").paginate(IdentityStoreId=self.store_id)
        for page in pages:
            ids.update({u["UserName"]: u["UserId"] for u in page["Users"]})
        return ids


def _keys() -> dict[str, str]:
    return {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@asynccontextmanager
async def moto_server() -> AsyncIterator[Moto]:
    import re

    pattern = re.compile(r"Running on (http://127\.0\.0\.1:\d+)")

    def found(line: str) -> str | None:
        match = pattern.search(line)
        return match.group(1) if match else None

    args = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"]
    async with child_until(args, found, env=AWS_ENV) as url:
        yield Moto(url)


class Watcher:
    """Reads the target from outside: who still holds a grant (and, on the ledger, who is
    still an enabled principal)."""

    def __init__(self, target: str, folder: Path, moto: Moto | None) -> None:
        self.target, self.folder, self.moto = target, folder, moto
        self.pass_seconds: list[float] = []
        self._ids: dict[str, str] = {}

    def _ledger(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.folder / 'ledger.db'}?mode=ro", uri=True, timeout=30)

    def count(self, roles: list[str]) -> int:
        """How many grants of ``roles`` the target holds."""
        if self.moto is not None:
            return len(self.moto.holders(roles))
        path = self.folder / "ledger.db"
        if not path.exists():
            return 0
        marks = ",".join("?" * len(roles))
        with self._ledger() as conn:
            try:
                row = conn.execute(f"SELECT count(*) FROM grants WHERE role IN ({marks})", roles)
            except sqlite3.OperationalError:
                return 0
            return int(row.fetchone()[0])

    def writes(self) -> int:
        """A number that changes whenever the target changes."""
        if self.moto is not None:
            return sum(len(self.moto.holders(roles)) for roles in ROLES.values())
        path = self.folder / "ledger.db"
        if not path.exists():
            return 0
        with self._ledger() as conn:
            try:
                return int(conn.execute("SELECT count(*) FROM writes").fetchone()[0])
            except sqlite3.OperationalError:
                return 0

    def still_held(self, users: list[str]) -> set[str]:
        """Which of ``users`` still hold a grant (or, on the ledger, an enabled principal)."""
        started = time.perf_counter()
        try:
            if self.moto is not None:
                missing = [u for u in users if u not in self._ids]
                if missing:
                    self._ids.update(self.moto.user_ids())
                holders = set(self.moto.holders([r for rs in ROLES.values() for r in rs]))
                return {u for u in users if self._ids.get(u) in holders}
            marks = ",".join("?" * len(users))
            with self._ledger() as conn:
                held = conn.execute(
                    f"SELECT user FROM grants WHERE user IN ({marks})"
                    f" UNION SELECT user FROM principals WHERE enabled = 1 AND user IN ({marks})",
                    [*users, *users],
                ).fetchall()
            return {row[0] for row in held}
        finally:
            self.pass_seconds.append(time.perf_counter() - started)


def rules(target: str, moto: Moto | None, watcher_roles: dict[str, list[str]]) -> str:
    if target == "identity-center":
        assert moto is not None
        head = (
            f'[targets.t]\nkind = "aws-identity-center"\nregion = "{REGION}"\n'
            f'endpoint_url = "{moto.url}"\n'
        )
        prefix = f"{ACCOUNT}/"
    else:
        head = '[targets.t]\nkind = "ledger"\npath = "ledger.db"\n'
        prefix = ""
    text = '[pipeline]\npoll_seconds = 0.5\n\n[reconcile]\nschedule = ""\n\n' + head
    for group, roles in watcher_roles.items():
        grants = ", ".join(f'{{ target = "t", role = "{prefix}{r}" }}' for r in roles)
        text += f'\n[[rules]]\ngroup = "{group}"\ngrants = [{grants}]\n'
    return text


async def _until(check: Callable[[], Any], limit: float, every: float = 0.005) -> None:
    """Poll another process's state in a thread: there is no event to await across processes."""
    async with asyncio.timeout(limit):
        while not await asyncio.to_thread(check):  # noqa: ASYNC110
            await asyncio.sleep(every)


async def _create_users(
    http: aiohttp.ClientSession, url: str, names: list[str], concurrency: int = 16
) -> dict[str, str]:
    ids: dict[str, str] = {}
    cursor = iter(names)

    async def client() -> None:
        for name in cursor:
            body = {"schemas": [USER], "userName": name, "active": True}
            async with http.post(f"{url}/Users", json=body) as reply:
                assert reply.status == 201, await reply.text()
                ids[name] = (await reply.json())["id"]

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return ids


def _store_cleared(db: Path) -> dict[str, tuple[str, str | None]]:
    """The product's own record: userName -> (left_at, cleared_at)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        rows = conn.execute("SELECT user_name, left_at, cleared_at FROM leavers").fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def _stamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def leavers(args: Any, target: str, moto: Moto | None, background: int) -> dict[str, Any]:  # noqa: C901 - one scenario, read top to bottom
    """The idle (background 0) or loaded scenario: one fresh service."""
    with tempfile.TemporaryDirectory(prefix="bench-leaver-") as tmp:
        folder = Path(tmp)
        watcher = Watcher(target, folder, moto)
        config = write_config(folder, rules(target, moto, ROLES))
        async with running(config) as url, session() as http:
            names = [f"leaver{i}@example.com" for i in range(args.users)]
            ids = await _create_users(http, url, names)
            group = {
                "schemas": [GROUP],
                "displayName": "engineering",
                "members": [{"value": uid} for uid in ids.values()],
            }
            async with http.post(f"{url}/Groups", json=group) as reply:
                assert reply.status == 201, await reply.text()
            await _until(lambda: watcher.count(ROLES["engineering"]) >= args.users, 300, 0.05)
            stop = asyncio.Event()
            mix: Mix | None = None
            noise: asyncio.Task[int] | None = None
            if background:
                mix = Mix(
                    http,
                    url,
                    users=args.mix_users,
                    groups=args.mix_groups,
                    concurrency=background,
                    prefix="load",
                )
                noise = asyncio.create_task(_loop(mix, stop))
                await asyncio.sleep(args.warm)  # let the mix reach its stride
            answered: dict[str, float] = {}
            cleared: dict[str, float] = {}
            sent_at: dict[str, datetime] = {}
            pending: list[str] = []
            done_sending = asyncio.Event()

            async def watch() -> None:
                while not (done_sending.is_set() and not pending):
                    if pending:
                        batch = list(pending)
                        held = await asyncio.to_thread(watcher.still_held, batch)
                        now = time.perf_counter()
                        for name in batch:
                            if name not in held:
                                cleared[name] = now
                                pending.remove(name)
                    if moto is None:
                        await asyncio.sleep(args.poll_ms / 1000)
                    else:
                        await asyncio.sleep(0)

            watching = asyncio.create_task(watch())
            interval = 1 / args.rate
            started = time.perf_counter()
            before = mix.tally.operations() if mix else {}
            for index, name in enumerate(names[: args.leavers]):
                await asyncio.sleep(max(0.0, started + index * interval - time.perf_counter()))
                async with http.patch(f"{url}/Users/{ids[name]}", json=DEACTIVATE) as reply:
                    assert reply.status == 200, await reply.text()
                    await reply.read()
                answered[name] = time.perf_counter()
                sent_at[name] = datetime.now(UTC)
                pending.append(name)
            done_sending.set()
            # The mix runs until every measured leaver is cleared, or --clear-limit after the
            # last one was answered; then it stops, and the rest get --clear-limit more.
            # Whoever is still not cleared counts at the time waited, a lower bound.
            background_outlasted = False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(args.clear_limit):
                    await asyncio.shield(watching)
            window = time.perf_counter() - started
            after = mix.tally.operations() if mix else {}
            stop.set()
            if noise is not None:
                background_outlasted = not watching.done()
                await noise
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(args.clear_limit):
                    await asyncio.shield(watching)
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
            gave_up = time.perf_counter()
            not_cleared = [n for n in answered if n not in cleared]
            for name in not_cleared:
                cleared[name] = gave_up
            db = folder / "jmlsync.db"

            def stamped_all() -> bool:
                rows = _store_cleared(db)
                return all(rows.get(n, (None, None))[1] for n in answered)

            with contextlib.suppress(TimeoutError):
                await _until(stamped_all, 10, 0.05)
            stamps = {n: c for n, (_, c) in _store_cleared(db).items()}
    from_response = [cleared[n] - answered[n] for n in answered]
    stamped = [
        (_stamp(cleared_at) - sent_at[n]).total_seconds()
        for n in sent_at
        if (cleared_at := stamps.get(n)) is not None
    ]

    def during(op: str) -> int:
        return int(after.get(op, {}).get("requests", 0) - before.get(op, {}).get("requests", 0))

    result: dict[str, Any] = {
        "leavers": len(answered),
        "not_cleared": len(not_cleared),
        "latency_is_lower_bound": bool(not_cleared),
        "window_s": round(window, 2),
        "response_to_cleared_in_target": percentiles(from_response),
        "store_cleared_at": percentiles(stamped),
        "watch_pass_ms": percentiles(watcher.pass_seconds),
    }
    if mix is not None:
        result["background"] = {
            "clients": background,
            "mix_passes": mix.iteration,
            "requests": mix.tally.requests,
            "errors": sum(mix.tally.errors.values()),
            "stopped_before_all_cleared": background_outlasted,
            "during_window": {
                "deactivations": during("PATCH /Users (deactivate)"),
                "member_patches": during("PATCH /Groups (add 10)"),
                "creates": during("POST /Users"),
                "deletes": during("DELETE /Users"),
            },
        }
    return result


async def _loop(mix: Mix, stop: asyncio.Event) -> int:
    while not stop.is_set():
        await mix.run()
    return mix.tally.requests


async def pipeline(args: Any, target: str, moto: Moto | None) -> dict[str, Any]:
    """Grant and revoke throughput: --burst users join a group mapped to two roles, then
    leave it."""
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        folder = Path(tmp)
        watcher = Watcher(target, folder, moto)
        config = write_config(folder, rules(target, moto, ROLES))
        roles = ROLES["burst"]
        query = roles
        expected = 2 * args.burst
        async with running(config) as url, session() as http:
            names = [f"burst{i}@example.com" for i in range(args.burst)]
            ids = list((await _create_users(http, url, names)).values())
            async with http.post(
                f"{url}/Groups", json={"schemas": [GROUP], "displayName": "burst"}
            ) as reply:
                assert reply.status == 201, await reply.text()
                group_id = (await reply.json())["id"]
            await _settle(watcher)
            batches = [ids[i : i + 100] for i in range(0, len(ids), 100)]

            async def patch(operations: list[dict[str, Any]]) -> None:
                body = {"schemas": [PATCH_OP], "Operations": operations}
                async with http.patch(f"{url}/Groups/{group_id}", json=body) as reply:
                    assert reply.status in (200, 204), await reply.text()
                    await reply.read()

            started = time.perf_counter()
            await asyncio.gather(
                *(
                    patch([{"op": "add", "path": "members", "value": [{"value": u} for u in b]}])
                    for b in batches
                )
            )
            answered = time.perf_counter()
            await _until(lambda: watcher.count(query) >= expected, 600, 0.01)
            granted = time.perf_counter()
            await asyncio.gather(
                *(
                    patch([{"op": "remove", "path": f'members[value eq "{u}"]'} for u in b])
                    for b in batches
                )
            )
            revoke_answered = time.perf_counter()
            await _until(lambda: watcher.count(query) == 0, 600, 0.01)
            revoked = time.perf_counter()
    return {
        "users": args.burst,
        "operations_each_way": expected,
        "grant": {
            "patches_answered_s": round(answered - started, 3),
            "all_applied_s": round(granted - started, 3),
            "ops_per_s": round(expected / (granted - started), 1),
        },
        "revoke": {
            "patches_answered_s": round(revoke_answered - granted, 3),
            "all_applied_s": round(revoked - granted, 3),
            "ops_per_s": round(expected / (revoked - granted), 1),
        },
    }


async def _settle(watcher: Watcher, quiet: float = 1.0) -> None:
    """Wait until the target has not changed for ``quiet`` seconds."""
    last, since = await asyncio.to_thread(watcher.writes), time.perf_counter()
    async with asyncio.timeout(300):
        while time.perf_counter() - since < quiet:
            await asyncio.sleep(0.1)
            now = await asyncio.to_thread(watcher.writes)
            if now != last:
                last, since = now, time.perf_counter()


async def main_async(args: Any) -> dict[str, Any]:
    if args.target == "identity-center":
        os.environ.update(AWS_ENV)
        os.environ["AWS_CONFIG_FILE"] = os.devnull
        os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    scenarios = [s for s in ("idle", "loaded", "pipeline") if s in args.scenarios]
    results: dict[str, list[dict[str, Any]]] = {s: [] for s in scenarios}
    async with _maybe_moto(args.target) as moto:
        for number in range(args.rounds):
            for scenario in scenarios:
                if moto is not None:
                    await asyncio.to_thread(moto.reset)
                if scenario == "pipeline":
                    figures = await pipeline(args, args.target, moto)
                    line = f"grant {figures['grant']['ops_per_s']} ops/s, revoke"
                    line += f" {figures['revoke']['ops_per_s']} ops/s"
                else:
                    background = args.background if scenario == "loaded" else 0
                    figures = await leavers(args, args.target, moto, background)
                    line = f"p99 {figures['response_to_cleared_in_target']['p99_ms']} ms"
                results[scenario].append(figures)
                print(f"round {number + 1} {scenario}: {line}", file=sys.stderr)
    summary: dict[str, Any] = {}
    for scenario, rounds in results.items():
        if scenario == "pipeline":
            summary[scenario] = {
                "grant_ops_per_s": spread(r["grant"]["ops_per_s"] for r in rounds),
                "revoke_ops_per_s": spread(r["revoke"]["ops_per_s"] for r in rounds),
                "rounds": rounds,
            }
        else:
            latencies = [r["response_to_cleared_in_target"] for r in rounds]
            summary[scenario] = {
                key: spread(lat[key] for lat in latencies) for key in ("p50_ms", "p99_ms", "max_ms")
            }
            summary[scenario]["not_cleared_total"] = sum(r["not_cleared"] for r in rounds)
            summary[scenario]["rounds"] = rounds
    targets = []
    if "loaded" in summary:
        limit = 250.0 if args.target == "ledger" else 1000.0
        targets.append(
            verdict(
                f"leaver p99 < {limit:g} ms while the mix runs ({args.target}, median of rounds)",
                summary["loaded"]["p99_ms"].get("median"),
                limit,
                below=True,
            )
        )
    if "pipeline" in summary and args.target == "ledger":
        for way in ("grant", "revoke"):
            targets.append(
                verdict(
                    f"pipeline {way} >= 2000 ops/s on the ledger (median of rounds)",
                    summary["pipeline"][f"{way}_ops_per_s"].get("median"),
                    2000.0,
                    below=False,
                )
            )
    return {
        "benchmark": "leaver_latency",
        "target": args.target,
        "users": args.users,
        "leavers": args.leavers,
        "rate_per_s": args.rate,
        "background_clients": args.background,
        "mix_users": args.mix_users,
        "burst_users": args.burst,
        "rounds": args.rounds,
        "scenarios": summary,
        "targets": targets,
    }


@asynccontextmanager
async def _maybe_moto(target: str) -> AsyncIterator[Moto | None]:
    if target == "identity-center":
        async with moto_server() as moto:
            yield moto
    else:
        yield None


def main() -> None:
    made = parser(__doc__)
    made.add_argument("--target", choices=("ledger", "identity-center"), default="ledger")
    made.add_argument(
        "--scenarios",
        default="idle,loaded,pipeline",
        type=lambda text: [s for s in text.split(",") if s],
        help="comma-separated, of idle,loaded,pipeline (default all)",
    )
    made.add_argument("--users", type=int, default=300, help="provisioned into the mapped group")
    made.add_argument("--leavers", type=int, default=200, help="measured deactivations")
    made.add_argument("--rate", type=float, default=50.0, help="measured deactivations per second")
    made.add_argument("--background", type=int, default=16, help="mix clients when loaded")
    made.add_argument("--mix-users", type=int, default=2000, help="users per pass of the mix")
    made.add_argument("--mix-groups", type=int, default=20)
    made.add_argument("--warm", type=float, default=1.0, help="seconds of mix before measuring")
    made.add_argument("--burst", type=int, default=2000, help="pipeline: users joining at once")
    made.add_argument(
        "--clear-limit",
        type=float,
        default=120.0,
        help="seconds to wait for the measured leavers with the mix running, then as many"
        " again without it (default 120)",
    )
    made.add_argument("--poll-ms", type=float, default=5.0, help="ledger watcher interval")
    args = made.parse_args()
    unknown = set(args.scenarios) - {"idle", "loaded", "pipeline"}
    if unknown:
        made.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    emit(asyncio.run(main_async(args)), args.json)


if __name__ == "__main__":
    main()
