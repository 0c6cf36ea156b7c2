"""``jmlsync token generate --user``, ``token list`` and ``token revoke``: personal API tokens.

A personal token is printed once and stored only as its SHA-256, with its user, scope and
expiry; generating and revoking one are audit-chain rows.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import click

from jmlsync.api.tokens import SCOPES, new_token
from jmlsync.cli_common import CONFIG_OPTION, settings_or_exit
from jmlsync.config import Settings
from jmlsync.domain.timebound_records import TokenRow
from jmlsync.scim.resources import now_utc
from jmlsync.service import open_store
from jmlsync.store.access import SqlAccess
from jmlsync.store.directory import SqlStore

T = TypeVar("T")
__all__ = ["SCOPES", "generate_personal", "token_list", "token_revoke"]


def _with_store(settings: Settings, action: Callable[[SqlStore, SqlAccess], Awaitable[T]]) -> T:
    async def run() -> T:
        store = await open_store(settings)
        try:
            return await action(store, SqlAccess(store.db))
        finally:
            await store.close()

    return asyncio.run(run())


def generate_personal(settings: Settings, user: str, scope: str, days: int | None) -> None:
    """Make, store (hashed) and print a personal token for directory user ``user``."""
    plaintext, digest = new_token()
    validity = timedelta(days=days or settings.access.token_days)

    async def add(store: SqlStore, access: SqlAccess) -> tuple[str, int] | None:
        found = await store.find_user(user)
        if found is None:
            return None
        name = str(found.doc["userName"])
        now = now_utc()
        token_id = await access.add_token(
            name, scope, digest, now=now, expires_at=now + validity, actor="operator"
        )
        return name, token_id

    made = _with_store(settings, add)
    if made is None:
        click.echo(f"jmlsync: no directory user {user!r}", err=True)
        sys.exit(1)
    name, token_id = made
    click.echo(plaintext)
    click.echo(
        f"personal token #{token_id} for {name} (scope {scope}), valid {validity.days} day(s);"
        " it is shown only now",
        err=True,
    )


def _row(token: TokenRow) -> dict[str, object]:
    return {
        "id": token.id,
        "user": token.user_name,
        "scope": token.scope,
        "created_at": token.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "expires_at": token.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "revoked_at": token.revoked_at.strftime("%Y-%m-%dT%H:%M:%SZ") if token.revoked_at else None,
    }


@click.command("list")
@CONFIG_OPTION
@click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table")
def token_list(config_path: Path, output_format: str) -> None:
    """The personal API tokens (never their values), newest first."""

    async def read(_store: SqlStore, access: SqlAccess) -> list[TokenRow]:
        return await access.tokens()

    rows = [_row(t) for t in _with_store(settings_or_exit(config_path), read)]
    if output_format == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'ID':>5}  {'USER':<28} {'SCOPE':<8} {'EXPIRES_AT':<21} REVOKED_AT")
    for row in rows:
        click.echo(
            f"{row['id']:>5}  {row['user']!s:<28} {row['scope']!s:<8} {row['expires_at']!s:<21}"
            f" {row['revoked_at'] or '-'}"
        )


@click.command("revoke")
@CONFIG_OPTION
@click.argument("token_id", type=click.IntRange(1, 2**62))
def token_revoke(config_path: Path, token_id: int) -> None:
    """Revoke personal token ID at once."""

    async def revoke(_store: SqlStore, access: SqlAccess) -> bool:
        return await access.revoke_token(token_id, now=now_utc(), actor="operator")

    if not _with_store(settings_or_exit(config_path), revoke):
        click.echo(f"jmlsync: no unrevoked personal token #{token_id}", err=True)
        sys.exit(1)
    click.echo(f"revoked personal token #{token_id}", err=True)
