"""``jmlsync review``: access-review campaigns from the command line."""

from __future__ import annotations

import asyncio
import getpass
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal, TypeVar

import click

from jmlsync.cli.common import CONFIG_ENVVAR, CONFIG_OPTION, settings_or_exit
from jmlsync.cli.review_bundle import anchor_problems, build_bundle
from jmlsync.clock import now_utc
from jmlsync.config import Settings
from jmlsync.domain.reviews import DecisionError
from jmlsync.engine.reviews import ReviewError, Reviews
from jmlsync.report.review_evidence import (
    MANIFEST,
    CampaignView,
    campaign_json,
    completion,
    export_csv,
    export_json,
    verify_bundle,
)
from jmlsync.report.review_views import campaign_view
from jmlsync.runtime import Runtime, open_runtime

T = TypeVar("T")

FORMAT = click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
)
BY = click.option(
    "--by",
    "actor",
    default=None,
    help="Who runs this, recorded in the audit chain.  [default: the OS user]",
)


def _actor(actor: str | None) -> str:
    return actor or getpass.getuser()


def _run(settings: Settings, work: Callable[[Runtime, Reviews], Awaitable[T]]) -> T:
    """Run ``work`` on an open runtime; a review error is one line and exit 1."""

    async def body() -> T:
        async with open_runtime(settings) as runtime:
            assert runtime.reviews is not None
            return await work(runtime, runtime.reviews)

    try:
        return asyncio.run(body())
    except (ReviewError, DecisionError) as exc:
        click.echo(f"jmlsync: {exc}", err=True)
        sys.exit(1)


@click.group("review")
def review() -> None:
    """Access reviews: snapshot who holds what, collect decisions, revoke, prove it."""


@review.command("start")
@CONFIG_OPTION
@click.argument("name")
@FORMAT
@BY
def start(config_path: Path, name: str, output_format: str, actor: str | None) -> None:
    """Start campaign NAME now: snapshot what the targets hold; print the campaign's id."""
    settings = settings_or_exit(config_path)
    campaign, items = _run(settings, lambda _rt, reviews: reviews.start(name, _actor(actor)))
    if output_format == "json":
        click.echo(
            json.dumps(
                {
                    "id": campaign.id,
                    "items": len(items),
                    "deadline": campaign.deadline,
                    "snapshot_sha256": campaign.snapshot_sha256,
                }
            )
        )
        return
    click.echo(campaign.id)
    unassigned = sum(1 for i in items if i.reviewer is None)
    note = f"; {unassigned} without a reviewer" if unassigned else ""
    click.echo(f"{len(items)} item(s) to review by {campaign.deadline}{note}", err=True)


@review.command("list")
@CONFIG_OPTION
@FORMAT
def list_campaigns(config_path: Path, output_format: str) -> None:
    """Every campaign started, oldest first, with its completion."""
    settings = settings_or_exit(config_path)

    async def work(_rt: Runtime, reviews: Reviews) -> list[CampaignView]:
        return [await campaign_view(reviews, c.id) for c in await reviews.reviews.campaigns()]

    views = _run(settings, work)
    if output_format == "json":
        click.echo(json.dumps([campaign_json(v) for v in views], indent=2))
        return
    if not views:
        click.echo("no campaigns")
    for view in views:
        counts = completion(view)
        state = "closed" if view.campaign.closed_at else "open"
        click.echo(
            f"{view.campaign.id:<40} {state:<6} deadline {view.campaign.deadline}"
            f"  {counts['decided']}/{view.campaign.items} decided,"
            f" {counts['revocations_verified']}/{counts['revoked']} revocations verified"
        )


@review.command("show")
@CONFIG_OPTION
@click.argument("campaign_id", metavar="CAMPAIGN")
@FORMAT
def show(config_path: Path, campaign_id: str, output_format: str) -> None:
    """One campaign: its items, reviewers, decisions and remediation."""
    settings = settings_or_exit(config_path)
    view = _run(settings, lambda _rt, reviews: campaign_view(reviews, campaign_id))
    if output_format == "json":
        click.echo(export_json(view))
        return
    counts = completion(view)
    click.echo(f"campaign {view.campaign.id} ({view.scope}), deadline {view.campaign.deadline}")
    click.echo(
        f"{counts['decided']}/{view.campaign.items} decided, {counts['revoked']} revoked,"
        f" {counts['revocations_verified']} verified"
    )
    for item in view.items:
        decision = view.decisions.get(item.id)
        remediation = view.remediations.get(item.id)
        state = decision.decision if decision else "undecided"
        if remediation is not None:
            state += " (verified)" if remediation.verified_at else " (pending)"
        click.echo(
            f"  {item.id:>4} {item.target:<12} {item.role:<32} {item.user.user_name:<24}"
            f" {item.source.label:<28} {item.reviewer or '(unassigned)':<20} {state}"
        )


@review.command("decide")
@CONFIG_OPTION
@click.argument("campaign_id", metavar="CAMPAIGN")
@click.option(
    "--file",
    "path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="decisions.csv or decisions.json (item_id, decision, reviewer, comment).",
)
@click.option("--late", is_flag=True, help="Import after the deadline (admins only; recorded).")
@BY
def decide(config_path: Path, campaign_id: str, path: Path, late: bool, actor: str | None) -> None:
    """Import keep/revoke decisions; the whole file is checked before any is recorded."""
    settings = settings_or_exit(config_path)
    kind: Literal["csv", "json"]
    if path.suffix.lower() == ".csv":
        kind = "csv"
    elif path.suffix.lower() == ".json":
        kind = "json"
    else:
        click.echo(f"jmlsync: {path}: expected a .csv or .json file", err=True)
        sys.exit(1)
    try:
        text = path.read_text("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        click.echo(f"jmlsync: {path}: cannot read: {exc}", err=True)
        sys.exit(1)

    async def work(_rt: Runtime, reviews: Reviews) -> tuple[int, int]:
        try:
            return await reviews.decide(
                campaign_id, text, kind, imported_by=_actor(actor), late=late
            )
        except DecisionError as exc:
            raise DecisionError(f"{path}: {exc}; nothing was recorded") from exc

    decisions, jobs = _run(settings, work)
    click.echo(f"recorded {decisions} decision(s); {jobs} revocation job(s) queued")


@review.command("export")
@CONFIG_OPTION
@click.argument("campaign_id", metavar="CAMPAIGN")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["csv", "json"]),
    default="csv",
    show_default=True,
)
@click.option("--output", type=click.Path(path_type=Path, dir_okay=False), default=None)
def export(config_path: Path, campaign_id: str, output_format: str, output: Path | None) -> None:
    """Every item with its decision and remediation, as CSV or JSON."""
    settings = settings_or_exit(config_path)
    if output is not None:
        _output_parent_exists(output)
    view = _run(settings, lambda _rt, reviews: campaign_view(reviews, campaign_id))
    text = export_json(view) + "\n" if output_format == "json" else export_csv(view)
    if output is None:
        click.echo(text, nl=False)
    else:
        try:
            output.write_text(text, "utf-8")
        except OSError as exc:
            click.echo(f"jmlsync: --output: cannot write {output}: {exc.strerror or exc}", err=True)
            sys.exit(1)
        click.echo(f"wrote {output}", err=True)


def _output_parent_exists(output: Path) -> None:
    """Refuse an --output whose directory does not exist, before any work (a typo in a path
    should not be found after the store was read, nor silently create a tree)."""
    if not output.parent.is_dir():
        click.echo(f"jmlsync: --output: directory {output.parent} does not exist", err=True)
        sys.exit(1)


@review.command("evidence")
@CONFIG_OPTION
@click.argument("campaign_id", metavar="CAMPAIGN")
@click.option("--output", required=True, type=click.Path(path_type=Path, file_okay=False))
@BY
def evidence(config_path: Path, campaign_id: str, output: Path, actor: str | None) -> None:
    """Write the evidence bundle of CAMPAIGN to a directory, anchored in the audit chain.

    The directory is created when missing; the one it is in must exist.
    """
    settings = settings_or_exit(config_path)
    _output_parent_exists(output)

    async def work(runtime: Runtime, reviews: Reviews) -> dict[str, bytes]:
        view = await campaign_view(reviews, campaign_id)
        return await build_bundle(runtime, view, _actor(actor), now_utc())

    files = _run(settings, work)
    output.mkdir(exist_ok=True)
    for name, data in files.items():
        (output / name).write_bytes(data)
    click.echo(f"wrote {len(files)} file(s) to {output}")


@review.command("verify-evidence")
@click.argument("folder", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    envvar=CONFIG_ENVVAR,
    help="Also check the anchoring rows against this store's audit chain.",
)
def verify_evidence(folder: Path, config_path: Path | None) -> None:
    """Check every file of a bundle against its manifest and anchors; exit 1 on a mismatch."""
    problems = verify_bundle(folder)
    if config_path is not None and not problems:
        settings = settings_or_exit(config_path)
        document = json.loads((folder / MANIFEST).read_text("utf-8"))
        problems = _run(settings, lambda runtime, _r: anchor_problems(runtime, document))
    for problem in problems:
        click.echo(f"jmlsync: {problem}", err=True)
    if problems:
        sys.exit(1)
    click.echo(f"{folder}: every file matches its manifest and anchors")


@review.command("exceptions")
@CONFIG_OPTION
@FORMAT
@click.option("--all", "everything", is_flag=True, help="Lifted ones too.")
def exceptions(config_path: Path, output_format: str, everything: bool) -> None:
    """The review exceptions: rule-given grants held back, and what ends each."""
    from jmlsync.report.plan import exceptions_json

    settings = settings_or_exit(config_path)
    found = _run(settings, lambda _rt, r: r.reviews.exceptions(active_only=not everything))
    if output_format == "json":
        rows = exceptions_json(found)
        for row, e in zip(rows, found, strict=True):
            row.update(lifted_at=e.lifted_at, lifted_reason=e.lifted_reason)
        click.echo(json.dumps(rows, indent=2))
        return
    if not found:
        click.echo("no review exceptions")
    for e in found:
        state = f"lifted {e.lifted_at}: {e.lifted_reason}" if e.lifted_at else "active"
        click.echo(
            f"{e.id:>4} {e.grant.target:<12} {e.grant.user:<24} {e.grant.role:<32}"
            f" remove {e.memberships} in the IdP; {state}"
        )


@review.command("lift")
@CONFIG_OPTION
@click.argument("exception_id", type=int)
@click.option("--reason", required=True, help="Why, recorded in the audit chain.")
@BY
def lift(config_path: Path, exception_id: int, reason: str, actor: str | None) -> None:
    """Lift a review exception by hand: the rules give the grant again."""
    settings = settings_or_exit(config_path)
    lifted = _run(
        settings, lambda _rt, r: r.reviews.lift(exception_id, reason, now_utc(), _actor(actor))
    )
    if not lifted:
        click.echo(f"jmlsync: no active review exception {exception_id}", err=True)
        sys.exit(1)
    click.echo(f"lifted review exception {exception_id}")
