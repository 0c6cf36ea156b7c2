"""``jmlsync reconcile`` and ``jmlsync explain``: show, and apply, the difference."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable
from itertools import chain
from pathlib import Path

import click

from jmlsync.cli.common import CONFIG_OPTION, settings_or_exit
from jmlsync.config import Settings
from jmlsync.domain.sla import LeaverRecord
from jmlsync.engine.reconcile import Explanation, Progress, Scope, collector_paused
from jmlsync.engine.reconcile_run import RunRequest
from jmlsync.ports import PlanningReads
from jmlsync.report.plan import (
    RunReport,
    explain_json,
    explain_table,
    lines_in_chunks,
    plan_json_chunks,
    plan_table_lines,
    write_chunks,
)
from jmlsync.runtime import RUNNER, open_runtime

#: Exit codes of ``reconcile`` (``--detailed-exitcode`` adds 2), as operators script them.
EXIT_OK, EXIT_ERROR, EXIT_PENDING, EXIT_HELD = 0, 1, 2, 3

FORMAT_OPTION = click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
)


def _progress() -> Progress:
    """Progress on stderr, only when stderr is a terminal (never in logs or pipes)."""
    if not sys.stderr.isatty():
        return lambda _stage, _count: None

    def show(stage: str, count: int) -> None:
        click.echo(f"\r{stage}: {count:,}".ljust(40), nl=False, err=True)

    return show


async def run_reconcile(
    settings: Settings,
    scope: Scope,
    *,
    dry_run: bool,
    max_revocations: int,
    progress: Progress,
    record_drift: bool = False,
) -> RunReport:
    """The one reconciliation run (as the scheduler runs it, recorded as job ``reconcile``),
    applying unless a dry run or held; this command adds only the report of it. A dry run
    records its drift findings (and alerts and breaches) only with ``record_drift``."""
    request = RunRequest(
        scope=scope,
        apply=not dry_run,
        max_revocations=max_revocations,
        job="reconcile",
        guard_key="cli",
        requeue_regranted=not dry_run,
        record_drift=record_drift or not dry_run,
    )
    async with open_runtime(settings) as runtime:
        unknown = await unknown_users(runtime.store, scope.users or ())
        run = runtime.assurance.reconcile_run()
        run.runner = f"cli@{RUNNER}"
        result = await run.recorded(request, progress)
    snapshot = result.snapshot
    return RunReport(
        dry_run=dry_run,
        operations=snapshot.operations,
        outcomes=result.outcomes,
        held=result.held if result.held else _would_be(result.would_hold, dry_run),
        counts=snapshot.counts,
        seconds=snapshot.seconds,
        drift=result.drift,
        unreadable=snapshot.unreadable,
        exceptions=snapshot.exceptions,
        unknown_users=unknown,
    )


async def unknown_users(store: PlanningReads, users: Iterable[str]) -> list[str]:
    """The userNames the directory does not hold (a typo, or a user the IdP never pushed)."""
    return [name for name in sorted(users) if await store.find_user(name) is None]


def _warn_unknown(users: Iterable[str]) -> None:
    for name in users:
        click.echo(f"jmlsync: warning: user {name!r} is not in the directory", err=True)


def _would_be(message: str | None, dry_run: bool) -> str | None:
    return "would be " + message if message and dry_run else None


def reconcile_exit_code(report: RunReport, detailed: bool) -> int:
    if report.held and not report.dry_run:
        return EXIT_HELD
    if report.failed or report.unreadable:
        # An unreadable target is an error even though the rest was planned and applied.
        return EXIT_ERROR
    if detailed and report.dry_run and report.operations:
        return EXIT_PENDING
    return EXIT_OK


def write_plan(report: RunReport, output_format: str) -> None:
    """The plan on stdout, written as it is rendered (a large plan is never held whole)."""
    if output_format == "json":
        write_chunks(chain(plan_json_chunks(report), ["\n"]), sys.stdout)
    else:
        write_chunks(lines_in_chunks(plan_table_lines(report)), sys.stdout)


@click.command("reconcile")
@CONFIG_OPTION
@click.option("--dry-run", is_flag=True, help="Show the plan; change nothing.")
@click.option(
    "--record-drift",
    is_flag=True,
    help="With --dry-run: record the drift findings and alert new ones, as a scheduled run"
    " does (a plain dry run records nothing).",
)
@click.option("--target", "targets", multiple=True, help="Only this target (repeatable).")
@click.option("--user", "users", multiple=True, help="Only this userName (repeatable).")
@FORMAT_OPTION
@click.option(
    "--detailed-exitcode",
    is_flag=True,
    help="Exit 0 when there is nothing to do, 2 when a dry run has changes pending, 1 on error.",
)
@click.option(
    "--max-revocations",
    type=click.IntRange(min=0),
    default=None,
    help="Hold the run (exit 3, nothing changed) if it would revoke more grants than this."
    "  [default: [reconcile].max_revocations]",
)
def reconcile(
    config_path: Path,
    dry_run: bool,
    record_drift: bool,
    targets: tuple[str, ...],
    users: tuple[str, ...],
    output_format: str,
    detailed_exitcode: bool,
    max_revocations: int | None,
) -> None:
    """Compare the directory with the targets and apply the difference."""
    # The objects of a run (a snapshot of the whole directory, the plan) live until it ends:
    # the cyclic collector would only walk them again and again. Reference counting still
    # frees whatever is dropped; the collector is back on however the command exits.
    with collector_paused():
        settings = settings_or_exit(config_path)
        unknown = sorted(set(targets) - set(settings.targets))
        if unknown:
            configured = ", ".join(sorted(settings.targets)) or "none"
            names = ", ".join(unknown)
            click.echo(f"jmlsync: unknown target {names}; configured: {configured}", err=True)
            sys.exit(EXIT_ERROR)
        scope = Scope(
            targets=frozenset(targets) if targets else None,
            users=frozenset(users) if users else None,
        )
        report = asyncio.run(
            run_reconcile(
                settings,
                scope,
                dry_run=dry_run,
                max_revocations=(
                    settings.reconcile.max_revocations
                    if max_revocations is None
                    else max_revocations
                ),
                progress=_progress(),
                record_drift=record_drift,
            )
        )
        if sys.stderr.isatty():
            click.echo("", err=True)
        write_plan(report, output_format)
        _warn_unknown(report.unknown_users)
        if report.held:
            click.echo(f"jmlsync: {report.held}", err=True)
        for name in sorted(report.unreadable):
            click.echo(f"jmlsync: target {name} could not be read; left out of the plan", err=True)
        sys.exit(reconcile_exit_code(report, detailed_exitcode))


@click.command("explain")
@CONFIG_OPTION
@click.option("--user", "user", required=True, help="The userName to explain.")
@FORMAT_OPTION
def explain(config_path: Path, user: str, output_format: str) -> None:
    """Why does this person have that access?

    Every desired grant with the rules and groups causing it, every actual grant in the
    targets, and the difference. Exits 1 when a target could not be read (the others are
    still shown).
    """
    settings = settings_or_exit(config_path)

    async def run() -> tuple[Explanation, LeaverRecord | None]:
        async with open_runtime(settings) as runtime:
            explanation = await runtime.reconciler.explain(user)
            leaver = await runtime.assurance.store.latest_leaver(explanation.user)
        return explanation, leaver.with_targets(settings.targets) if leaver else None

    explanation, leaver = asyncio.run(run())
    render = explain_json if output_format == "json" else explain_table
    click.echo(render(explanation, leaver))
    for name in sorted(explanation.unreadable):
        click.echo(f"jmlsync: target {name} could not be read", err=True)
    unknown = explanation.active is None
    if unknown:
        _warn_unknown([explanation.user])
    sys.exit(EXIT_ERROR if explanation.unreadable or unknown else EXIT_OK)
