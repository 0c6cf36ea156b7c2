"""``jmlsync queue`` and ``jmlsync audit``: see and re-drive dead letters, check the audit log."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import TypeVar

import click

from jmlsync.cli.common import CONFIG_OPTION, settings_or_exit
from jmlsync.clock import now_utc
from jmlsync.config import Settings
from jmlsync.domain.directory import format_timestamp
from jmlsync.engine.worker import LEAVERS_PAUSED, LEAVERS_RESUMED_AT
from jmlsync.evidence import verify_audit
from jmlsync.report import tables
from jmlsync.runtime import open_store
from jmlsync.store.queue import SqlQueue

T = TypeVar("T")


def _with_queue(settings: Settings, action: Callable[[SqlQueue], Awaitable[T]]) -> T:
    async def run() -> T:
        store = await open_store(settings)
        try:
            return await action(SqlQueue(store.db))
        finally:
            await store.close()

    return asyncio.run(run())


@click.group()
def queue() -> None:
    """See the provisioning queue and re-drive dead letters."""


@queue.command("list")
@CONFIG_OPTION
@click.option("--failed", is_flag=True, help="Only dead letters.")
@click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table")
def queue_list(config_path: Path, failed: bool, output_format: str) -> None:
    """List queued jobs: leavers and the most due first."""
    rows = _with_queue(settings_or_exit(config_path), lambda q: q.rows(failed_only=failed))
    if output_format == "json":
        click.echo(json.dumps([asdict(row) for row in rows], indent=2))
        return
    if not rows:
        click.echo("no dead letters" if failed else "the queue is empty")
        return
    table = []
    for row in rows:
        state = "dead" if row.failed_at else "leased" if row.leased_until else "pending"
        if row.leaver:
            state += "*"
        table.append(
            (str(row.id), row.user_name, state, str(row.attempts), row.cause, row.last_error or "")
        )
    headers = ("ID", "USER", "STATE", "ATTEMPTS", "CAUSE", "LAST ERROR")
    click.echo("\n".join(tables.render(headers, table, right=(0, 3))))
    click.echo("(* leaver: taken before other work)")


@queue.command("retry")
@CONFIG_OPTION
@click.argument("job_id", type=int, required=False)
@click.option("--all-failed", is_flag=True, help="Re-drive every dead letter.")
def queue_retry(config_path: Path, job_id: int | None, all_failed: bool) -> None:
    """Re-drive a dead letter (by ID) or all of them: due now, with fresh attempts."""
    if (job_id is None) == (not all_failed):
        raise click.UsageError("give a job ID or --all-failed (not both)")
    count = _with_queue(settings_or_exit(config_path), lambda q: q.retry_failed(now_utc(), job_id))
    if job_id is not None and count == 0:
        click.echo(f"jmlsync: job {job_id} is not a dead letter", err=True)
        sys.exit(1)
    click.echo(f"{count} job(s) due again")


@queue.command("resume-leavers")
@CONFIG_OPTION
def queue_resume_leavers(config_path: Path) -> None:
    """Resume leaver processing paused by [pipeline].max_leavers_per_minute."""

    async def resume(q: SqlQueue) -> str | None:
        reason = await q.get_state(LEAVERS_PAUSED)
        await q.set_state(LEAVERS_RESUMED_AT, format_timestamp(now_utc()))
        await q.set_state(LEAVERS_PAUSED, None)
        return reason

    reason = _with_queue(settings_or_exit(config_path), resume)
    click.echo(f"leaver processing resumed (was paused: {reason})" if reason else "not paused")


@click.group()
def audit() -> None:
    """Read and verify the hash-chained audit log."""


@audit.command("verify")
@CONFIG_OPTION
def audit_verify(config_path: Path) -> None:
    """Check the whole chain; exit 1 at the first edited, inserted or deleted row."""

    count, problem = _with_queue(settings_or_exit(config_path), verify_audit)
    if problem:
        click.echo(f"audit chain BROKEN after {count} good row(s): {problem}", err=True)
        sys.exit(1)
    click.echo(f"audit chain intact: {count} row(s)")


@audit.command("tail")
@CONFIG_OPTION
@click.option("-n", "count", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table")
def audit_tail(config_path: Path, count: int, output_format: str) -> None:
    """The newest audit rows, oldest first."""

    async def read(q: SqlQueue) -> list[dict[str, object]]:
        return [row async for row in q.audit_rows(last=count)]

    rows = _with_queue(settings_or_exit(config_path), read)
    if output_format == "json":
        for row in rows:
            click.echo(json.dumps(row))
        return
    if not rows:
        return
    lines = tables.render(
        ("SEQ", "AT", "ACTOR", "ACTION", "SUBJECT", "OUTCOME"),
        [
            (
                str(row["seq"]),
                str(row["at"]),
                str(row["actor"]),
                str(row["action"]),
                str(row["subject"]) + (f" {row['target']}/{row['role']}" if row["target"] else ""),
                str(row["outcome"]) + (f" ({row['detail']})" if row["detail"] else ""),
            )
            for row in rows
        ],
        right=(0,),
    )
    click.echo("\n".join(lines))
