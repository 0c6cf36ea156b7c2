"""Personal API tokens for ``jmlsync token``: ``generate --user``, their rows in ``token
list`` (named ``personal:ID``) and ``token revoke personal:ID``.

A personal token is printed once and stored only as its SHA-256, with its user, scope and
expiry; generating and revoking one are audit-chain rows.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

import click

from jmlsync.api.tokens import SCOPES, new_token
from jmlsync.clock import now_utc
from jmlsync.config import Settings
from jmlsync.domain.timebound_records import TokenRow
from jmlsync.runtime import open_store
from jmlsync.store.access import SqlAccess
from jmlsync.store.directory import SqlStore

T = TypeVar("T")
__all__ = ["PREFIX", "SCOPES", "generate_personal", "personal_rows", "revoke_personal"]

#: How ``token list`` names a personal token, and ``token revoke`` takes it: personal:ID.
PREFIX = "personal:"


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
        "kind": "personal",
        "label": f"{PREFIX}{token.id}",
        "id": token.id,
        "user": token.user_name,
        "scope": token.scope,
        "created": token.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "expires_at": token.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "revoked_at": token.revoked_at.strftime("%Y-%m-%dT%H:%M:%SZ") if token.revoked_at else None,
    }


def personal_rows(settings: Settings) -> list[dict[str, object]]:
    """The personal API tokens (never their values), newest first, as ``token list`` rows."""

    async def read(_store: SqlStore, access: SqlAccess) -> list[TokenRow]:
        return await access.tokens()

    return [_row(t) for t in _with_store(settings, read)]


def revoke_personal(settings: Settings, name: str) -> None:
    """Revoke the personal token ``personal:ID`` at once (an audit-chain row)."""
    number = name.removeprefix(PREFIX)
    if not number.isdigit() or int(number) < 1:
        click.echo(f"jmlsync: {name!r}: a personal token is named personal:ID", err=True)
        sys.exit(1)
    token_id = int(number)

    async def revoke(_store: SqlStore, access: SqlAccess) -> bool:
        return await access.revoke_token(token_id, now=now_utc(), actor="operator")

    if not _with_store(settings, revoke):
        click.echo(f"jmlsync: no unrevoked personal token {PREFIX}{token_id}", err=True)
        sys.exit(1)
    click.echo(f"revoked personal token {PREFIX}{token_id}", err=True)
