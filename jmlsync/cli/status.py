"""``jmlsync status``: what an operator asks at a glance (``sla-report`` is in cli.sla)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click

from jmlsync.cli.common import CONFIG_OPTION, settings_or_exit
from jmlsync.config import Settings
from jmlsync.domain.errors import StoreUnavailable
from jmlsync.engine.worker import LEAVERS_PAUSED
from jmlsync.report import tables
from jmlsync.runtime import open_store, probe_write
from jmlsync.store.access import SqlAccess
from jmlsync.store.assurance import SqlAssurance
from jmlsync.store.directory import SqlStore
from jmlsync.store.queue import SqlQueue


async def _status(settings: Settings) -> dict[str, Any]:
    """The status document; only ``store`` when the store cannot be reached."""
    try:
        store = await open_store(settings)
    except StoreUnavailable as exc:
        return {"store": {"reachable": False, "writable": False, "error": str(exc)}}
    try:
        return await _read_status(store, settings.targets)
    except StoreUnavailable as exc:  # it went away while we read
        return {"store": {"reachable": False, "writable": False, "error": str(exc)}}
    finally:
        await store.close()


async def _writable(queue: SqlQueue) -> str | None:
    """Why the store refuses writes, or None: a separate process cannot see the service's
    own failures, so it writes one harmless row (``service_state.store_probe``) itself."""
    try:
        await probe_write(queue)
    except StoreUnavailable as exc:
        return str(exc)
    return None


async def _read_status(store: SqlStore, targets: Iterable[str]) -> dict[str, Any]:
    queue, assurance = SqlQueue(store.db), SqlAssurance(store.db)
    refused = await _writable(queue)
    stats = await queue.stats()
    drift = await assurance.open_drift()
    unverified = await assurance.unverified_leavers()
    open_access = await SqlAccess(store.db).find(states=["pending", "active", "ended"])
    return {
        "queue": {
            "pending": stats.pending,
            "dead_letters": stats.dead,
            "oldest_enqueued_at": stats.oldest_due,
            "leavers_paused": await queue.get_state(LEAVERS_PAUSED),
        },
        "runs": {
            run.job: {
                "started_at": run.started_at,
                "finished_at": run.finished_at,
                "outcome": run.outcome,
                "counts": run.counts,
            }
            for run in await assurance.last_runs()
        },
        "drift": {
            "missing": sum(1 for d in drift if d.kind == "missing"),
            "unmanaged": sum(1 for d in drift if d.kind == "unmanaged"),
        },
        "leavers": {
            "not_cleared": sum(1 for leaver in unverified if leaver.cleared_at is None),
            "not_verified": len(unverified),
            "sla_breaches": await assurance.open_breaches(),
            "pending_by_target": await assurance.pending_by_target(targets),
        },
        "movers": await assurance.movers.counts(),
        "access": {
            "pending": sum(1 for r in open_access if r.state == "pending"),
            "active": sum(1 for r in open_access if r.state == "active"),
            "ended_not_verified": sum(1 for r in open_access if r.state == "ended"),
            "breaches": sum(1 for r in open_access if r.breached_at is not None),
        },
        "store": {"reachable": True, "writable": refused is None, "error": refused},
    }


def _status_table(status: dict[str, Any]) -> str:
    queue, drift, leavers = status["queue"], status["drift"], status["leavers"]
    lines = []
    if not status["store"]["writable"]:
        lines.append(f"store:   REFUSES WRITES: {status['store']['error']}")
    lines += [
        f"queue:   {queue['pending']} pending, {queue['dead_letters']} dead letter(s)"
        + (f", oldest since {queue['oldest_enqueued_at']}" if queue["oldest_enqueued_at"] else ""),
    ]
    if queue["leavers_paused"]:
        lines.append(f"         LEAVERS PAUSED: {queue['leavers_paused']}")
    lines.append(
        f"leavers: {leavers['not_cleared']} not cleared, {leavers['not_verified']} not verified,"
        f" {leavers['sla_breaches']} SLA breach(es) open"
    )
    waiting = {t: n for t, n in leavers["pending_by_target"].items() if n}
    if waiting:
        lines.append(
            "         not cleared on: " + ", ".join(f"{t} ({n})" for t, n in waiting.items())
        )
    movers = status["movers"]
    lines.append(
        f"movers:  {movers['not_verified']} revocation(s) not verified,"
        f" {movers['sla_breaches']} SLA breach(es) open"
    )
    lines.append(f"drift:   {drift['missing']} missing, {drift['unmanaged']} unmanaged")
    access = status["access"]
    lines.append(
        f"access:  {access['pending']} pending, {access['active']} active,"
        f" {access['ended_not_verified']} ended not verified,"
        f" {access['breaches']} end breach(es) open"
    )
    lines.append("last runs:")
    rows = []
    for job, run in sorted(status["runs"].items()):
        counts = ", ".join(f"{k}={v}" for k, v in sorted(run["counts"].items()))
        rows.append(
            (
                job,
                run["outcome"] or "running",
                str(run["started_at"]),
                f"({counts})" if counts else "",
            )
        )
    lines.extend(tables.render(None, rows, indent=2))
    if not status["runs"]:
        lines.append("  none yet")
    return "\n".join(lines)


@click.command("status")
@CONFIG_OPTION
@click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table")
def status(config_path: Path, output_format: str) -> None:
    """Queue depth, dead letters, last runs, open drift, SLA breaches and time-bound access.

    Exits 1 when an SLA breach (a leaver's, a mover's, or an unverified end of a time-bound
    grant past ``[access].end_seconds``) is open, leaver processing is paused, or the store is
    unreachable or refuses writes (found with one harmless probe write).
    """
    result = asyncio.run(_status(settings_or_exit(config_path)))
    store = result["store"]
    if not store["reachable"]:
        if output_format == "json":
            click.echo(json.dumps(result, indent=2))
        else:
            click.echo(f"jmlsync: the store is unreachable: {store['error']}", err=True)
        sys.exit(1)
    click.echo(json.dumps(result, indent=2) if output_format == "json" else _status_table(result))
    breaches = (
        result["leavers"]["sla_breaches"]
        + result["movers"]["sla_breaches"]
        + result["access"]["breaches"]
    )
    if breaches or result["queue"]["leavers_paused"] or not store["writable"]:
        sys.exit(1)
