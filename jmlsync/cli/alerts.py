"""``jmlsync alerts``: see the alert outbox, and re-drive undelivered alerts now."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import TypeVar

import aiohttp
import click

from jmlsync.cli.common import CONFIG_OPTION, settings_or_exit
from jmlsync.clock import now_utc
from jmlsync.config import Settings
from jmlsync.ops.alert_delivery import CLI_ALERT_SECONDS, Deliverer, delivery_policy, webhook_url
from jmlsync.report import tables
from jmlsync.runtime import RUNNER, open_store
from jmlsync.store.outbox import AlertRow, SqlOutbox

T = TypeVar("T")


def _with_outbox(settings: Settings, action: Callable[[SqlOutbox], Awaitable[T]]) -> T:
    async def run() -> T:
        store = await open_store(settings)
        try:
            return await action(SqlOutbox(store.db))
        finally:
            await store.close()

    return asyncio.run(run())


@click.group()
def alerts() -> None:
    """See the alert outbox and re-drive undelivered alerts."""


def _state(row: AlertRow) -> str:
    if row.state == "pending" and row.last_error:
        return "failing"
    return row.state


@alerts.command("list")
@CONFIG_OPTION
@click.option("--undelivered", is_flag=True, help="Only alerts still to deliver.")
@click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table")
@click.option(
    "--limit", type=click.IntRange(min=1), default=100, show_default=True, help="Newest N."
)
def alerts_list(config_path: Path, undelivered: bool, output_format: str, limit: int) -> None:
    """List alerts, newest first: pending, delivered, suppressed (a duplicate inside
    [alerts].dedupe_seconds) or unrouted (no webhook was configured)."""
    rows = _with_outbox(
        settings_or_exit(config_path), lambda o: o.rows(undelivered=undelivered, limit=limit)
    )
    if output_format == "json":
        click.echo(json.dumps([asdict(row) for row in rows], indent=2))
        return
    if not rows:
        click.echo("no undelivered alerts" if undelivered else "no alerts")
        return
    table = []
    for row in rows:
        text = row.text if len(row.text) <= 80 else row.text[:77] + "..."
        error = f" [{row.last_error}]" if row.last_error and row.state == "pending" else ""
        table.append(
            (str(row.id), row.created_at, row.kind, _state(row), str(row.attempts), text + error)
        )
    headers = ("ID", "CREATED", "KIND", "STATE", "ATTEMPTS", "TEXT")
    click.echo("\n".join(tables.render(headers, table, right=(0, 4))))


@alerts.command("retry")
@CONFIG_OPTION
@click.argument("alert_id", type=int, required=False)
def alerts_retry(config_path: Path, alert_id: int | None) -> None:
    """Make undelivered alerts (or the one with ALERT_ID) due now, and deliver them.

    With a webhook this command can reach, it posts them itself (waiting at most 10 s);
    what is left is delivered by the running service.
    """
    settings = settings_or_exit(config_path)
    try:
        url = webhook_url(settings)
    except OSError as exc:
        click.echo(f"jmlsync: cannot read [alerts].webhook_url_file: {exc.strerror}", err=True)
        sys.exit(1)

    async def retry(outbox: SqlOutbox) -> tuple[int, int]:
        ids = await outbox.retry(now_utc(), alert_id)
        if not ids or url is None:
            return len(ids), len(ids)
        async with aiohttp.ClientSession() as http:
            deliverer = Deliverer(
                outbox, http, url, owner=RUNNER, clock=now_utc, policy=delivery_policy(settings)
            )
            return len(ids), await deliverer.flush(ids, CLI_ALERT_SECONDS)

    due, left = _with_outbox(settings, retry)
    if alert_id is not None and due == 0:
        click.echo(f"jmlsync: alert {alert_id} is not undelivered", err=True)
        sys.exit(1)
    if url is None:
        click.echo(f"{due} alert(s) due again; no webhook is configured here")
        return
    click.echo(f"{due} alert(s) due again: {due - left} delivered")
    if left:
        click.echo(f"jmlsync: {left} alert(s) queued for the service to deliver", err=True)
