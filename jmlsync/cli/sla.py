"""``jmlsync sla-report``: the leaver (and mover) SLA over a window, as evidence."""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime
from pathlib import Path
from typing import NoReturn

import click

from jmlsync.cli.common import CONFIG_OPTION, settings_or_exit
from jmlsync.clock import now_utc
from jmlsync.config import Settings
from jmlsync.evidence import audit_head as audit_head
from jmlsync.evidence import sla_report_with_section
from jmlsync.policy_config import rules_from_settings
from jmlsync.report.sla import build as sla
from jmlsync.report.sla.access import TimeboundSection, table_lines
from jmlsync.report.sla.html import render_html
from jmlsync.report.sla.text import render_csv, render_table
from jmlsync.runtime import open_store

RENDERERS = {
    "table": render_table,
    "json": sla.render_json,
    "csv": render_csv,
    "html": render_html,
}


async def build(
    settings: Settings, since: datetime, until: datetime, now: datetime
) -> tuple[sla.SlaReport, TimeboundSection]:
    """The report of the window [since, until], measured at ``now``, with its section
    "time-bound access" (also inside the report's hashed body)."""
    store = await open_store(settings)
    try:
        rules = rules_from_settings(settings)
        return await sla_report_with_section(settings, store, since, until, now, rules=rules)
    finally:
        await store.close()


def _fail(message: str) -> NoReturn:
    click.echo(f"jmlsync: {message}", err=True)
    sys.exit(1)


def _window(since: str, until: str | None, now: datetime) -> tuple[datetime, datetime]:
    try:
        start = sla.parse_since(since, now)
    except ValueError as exc:
        _fail(f"--since: {exc}")
    try:
        end = now if until is None else sla.parse_since(until, now, "window end")
    except ValueError as exc:
        _fail(f"--until: {exc}")
    if start > now:
        _fail(f"--since {since} is in the future ({sla.iso_z(start)}); nothing to report yet")
    if end < start:
        _fail(f"--until ({sla.iso_z(end)}) is before --since ({sla.iso_z(start)})")
    return start, end


@click.command("sla-report")
@CONFIG_OPTION
@click.option("--since", default="30d", show_default=True, help="30d, 12h, 90m, 2w or a date.")
@click.option(
    "--until",
    default=None,
    help="End of the window: a duration back from now or a date.  [default: now]",
)
@click.option("--format", "output_format", type=click.Choice(sorted(RENDERERS)), default="table")
@click.option("--output", type=click.Path(path_type=Path, dir_okay=False), default=None)
def sla_report(
    config_path: Path, since: str, until: str | None, output_format: str, output: Path | None
) -> None:
    """One row per leaver in the window, the summary, movers' revocations and the time-bound
    grants that ended in the window ("time-bound access").

    Exits 1 when the window holds an SLA breach (for cron and CI), 0 otherwise.
    """
    settings = settings_or_exit(config_path)
    now = now_utc()
    start, end = _window(since, until, now)
    if output is not None and not output.parent.is_dir():
        _fail(f"--output: directory {output.parent} does not exist")
    report, section = asyncio.run(build(settings, start, end, now))
    text = RENDERERS[output_format](report)
    if output_format == "table":
        text = "\n".join([text.rstrip("\n"), *table_lines(section)])
    if output is None:
        click.echo(text)
    else:
        try:
            output.write_text(text if text.endswith("\n") else text + "\n", "utf-8")
        except OSError as exc:
            _fail(f"--output: cannot write {output}: {exc.strerror or exc}")
        click.echo(f"wrote {output}", err=True)
    sys.exit(1 if report.has_breach else 0)
