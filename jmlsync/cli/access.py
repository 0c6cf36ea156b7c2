"""``jmlsync access``: request, approve, deny, end, extend, list and show time-bound grants.

The operator on the host acts for a directory user with ``--as USERNAME`` (the audit row says
``operator as USERNAME``); without it the operator acts as an admin, who may end any grant
but never requests or approves. Any refused input is one line on stderr and exit status 1,
with nothing changed.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import click

from jmlsync.cli.common import CONFIG_OPTION, settings_or_exit
from jmlsync.config import Settings
from jmlsync.domain.timebound import AccessRefused, AccessRequest, parse_duration
from jmlsync.engine.timebound import Actor, TimeboundAccess
from jmlsync.report.access import request_details, request_json, request_table
from jmlsync.runtime import open_runtime

T = TypeVar("T")

AS_OPTION = click.option(
    "--as", "as_user", default=None, metavar="USERNAME", help="Act for this directory user."
)
FORMAT_OPTION = click.option(
    "--format", "output_format", type=click.Choice(["table", "json"]), default="table"
)


def _fail(message: str) -> None:
    click.echo(f"jmlsync: {message}", err=True)
    sys.exit(1)


def _actor(as_user: str | None) -> Actor:
    if as_user is None:
        return Actor("operator", None, admin=True)
    return Actor(f"operator as {as_user}", as_user)


def _run(settings: Settings, action: Callable[[TimeboundAccess], Awaitable[T]]) -> T:
    async def run() -> T:
        async with open_runtime(settings) as runtime:
            assert runtime.timebound is not None
            return await action(runtime.timebound)

    try:
        return asyncio.run(run())
    except AccessRefused as exc:
        _fail(str(exc))
        raise AssertionError("unreachable") from exc


#: Request ids are 64-bit in both stores; JSON clients read 53 bits exactly.
MAX_ID = 2**53


def _number(text: str) -> int:
    """A request id from the command line; anything else is one line and exit 1."""
    if not text.isdigit() or not 0 < int(text) <= MAX_ID:
        _fail(f"no access request {text!r}: an id is a positive number")
    return int(text)


def _duration(text: str, option: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as exc:
        _fail(f"{option}: {exc}")
        raise AssertionError("unreachable") from exc


def _show_one(request: AccessRequest, output_format: str) -> None:
    if output_format == "json":
        click.echo(json.dumps(request_json(request), indent=2))
    else:
        click.echo(request_table([request]))


@click.group()
def access() -> None:
    """Time-bound (just-in-time) access: request, approve, end, and prove it ended."""


@access.command("request")
@CONFIG_OPTION
@click.option("--grant", "grant", required=True, metavar="TARGET/ROLE")
@click.option("--for", "duration", required=True, metavar="DURATION", help="e.g. 30m, 2h.")
@click.option("--reason", default="", help="Why the access is needed.")
@click.option("--ticket", default=None, metavar="ID")
@AS_OPTION
@FORMAT_OPTION
def request_command(
    config_path: Path,
    grant: str,
    duration: str,
    reason: str,
    ticket: str | None,
    as_user: str | None,
    output_format: str,
) -> None:
    """Request GRANT for a while (as --as USERNAME)."""
    settings = settings_or_exit(config_path)
    target, sep, role = grant.partition("/")
    if not sep or not target or not role:
        _fail(f"--grant: expected TARGET/ROLE, got {grant!r}")
    length = _duration(duration, "--for")
    made = _run(
        settings,
        lambda access: access.request(
            _actor(as_user), target, role, duration=length, reason=reason, ticket=ticket
        ),
    )
    _show_one(made, output_format)


@access.command("approve")
@CONFIG_OPTION
@click.argument("request_id", callback=lambda _ctx, _param, value: _number(value))
@AS_OPTION
@FORMAT_OPTION
def approve_command(
    config_path: Path, request_id: int, as_user: str | None, output_format: str
) -> None:
    """Approve request ID (as --as USERNAME, an approver)."""
    settings = settings_or_exit(config_path)
    _show_one(
        _run(settings, lambda access: access.approve(_actor(as_user), request_id)),
        output_format,
    )


@access.command("deny")
@CONFIG_OPTION
@click.argument("request_id", callback=lambda _ctx, _param, value: _number(value))
@click.option("--reason", required=True)
@AS_OPTION
@FORMAT_OPTION
def deny_command(
    config_path: Path, request_id: int, reason: str, as_user: str | None, output_format: str
) -> None:
    """Deny request ID (or its pending extension) with a reason."""
    settings = settings_or_exit(config_path)
    _show_one(
        _run(settings, lambda access: access.deny(_actor(as_user), request_id, reason)),
        output_format,
    )


@access.command("end")
@CONFIG_OPTION
@click.argument("request_id", callback=lambda _ctx, _param, value: _number(value))
@AS_OPTION
@FORMAT_OPTION
def end_command(
    config_path: Path, request_id: int, as_user: str | None, output_format: str
) -> None:
    """End grant ID now (or cancel a request not started)."""
    settings = settings_or_exit(config_path)
    _show_one(_run(settings, lambda access: access.end(_actor(as_user), request_id)), output_format)


@access.command("extend")
@CONFIG_OPTION
@click.argument("request_id", callback=lambda _ctx, _param, value: _number(value))
@click.option("--for", "duration", required=True, metavar="DURATION")
@AS_OPTION
@FORMAT_OPTION
def extend_command(
    config_path: Path, request_id: int, duration: str, as_user: str | None, output_format: str
) -> None:
    """Ask for more time on active grant ID; it needs the approvals again."""
    settings = settings_or_exit(config_path)
    length = _duration(duration, "--for")
    _show_one(
        _run(settings, lambda access: access.extend(_actor(as_user), request_id, length)),
        output_format,
    )


@access.command("list")
@CONFIG_OPTION
@click.option("--pending", "which", flag_value="pending", help="Waiting for approval.")
@click.option("--active", "which", flag_value="active", help="Grants held now.")
@click.option("--mine", "which", flag_value="mine", help="Requests of --as USERNAME.")
@AS_OPTION
@FORMAT_OPTION
def list_command(
    config_path: Path, which: str | None, as_user: str | None, output_format: str
) -> None:
    """Requests, oldest first (all, --pending, --active or --mine)."""
    settings = settings_or_exit(config_path)
    if which == "mine" and as_user is None:
        _fail("--mine needs --as USERNAME")

    async def find(access: TimeboundAccess) -> list[AccessRequest]:
        if which == "mine":
            return await access.access.find(user=as_user)
        if which is not None:
            return await access.access.find(states=[which])
        return await access.access.find()

    found = _run(settings, find)
    if output_format == "json":
        click.echo(json.dumps([request_json(r) for r in found], indent=2))
    else:
        click.echo(request_table(found))


@access.command("show")
@CONFIG_OPTION
@click.argument("request_id", callback=lambda _ctx, _param, value: _number(value))
@AS_OPTION
@FORMAT_OPTION
def show_command(
    config_path: Path, request_id: int, as_user: str | None, output_format: str
) -> None:
    """Everything about request ID, with its whole history."""
    settings = settings_or_exit(config_path)

    async def show(access: TimeboundAccess) -> tuple[AccessRequest, Any]:
        request = await access.get(request_id)
        return request, await access.access.history(request_id)

    request, history = _run(settings, show)
    if output_format == "json":
        click.echo(json.dumps(request_json(request, history), indent=2))
    else:
        click.echo(request_details(request, history))
