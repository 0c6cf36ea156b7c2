"""``jmlsync token``'s IdP credentials: generate, list, revoke and migrate the bearer tokens
and HTTP Basic passwords in ``[server].tokens_file``.

The commands only edit the file; a running service reads it again when it changes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path

import click

from jmlsync.cli.common import CONFIG_OPTION, settings_or_exit
from jmlsync.cli.token_personal import PREFIX, personal_rows, revoke_personal
from jmlsync.clock import now_utc
from jmlsync.config import Settings
from jmlsync.scim.credentials import (
    LABEL,
    Credential,
    CredentialsError,
    edit_credentials,
    find,
    new_basic,
    new_bearer,
    read_credentials,
)
from jmlsync.scim.last_used import last_used

FILE_OPTION = click.option(
    "--file",
    "tokens_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Edit this tokens file instead of [server].tokens_file (no configuration needed),"
    " e.g. to build a Kubernetes Secret's file.",
)

#: The label ``generate`` gives when none is asked for (and the first plaintext token's).
DEFAULT_LABEL = "default"


def _read(path: Path) -> tuple[Credential, ...]:
    try:
        return read_credentials(path)
    except CredentialsError as exc:
        click.echo(f"jmlsync: {exc}", err=True)
        sys.exit(1)


def _free_label(taken: set[str]) -> str:
    if DEFAULT_LABEL not in taken:
        return DEFAULT_LABEL
    number = 2
    while f"{DEFAULT_LABEL}-{number}" in taken:
        number += 1
    return f"{DEFAULT_LABEL}-{number}"


def _save_secret(output: Path, secret: str) -> None:
    """Write the plaintext secret to a new file only its owner may read."""
    if not output.parent.is_dir():
        click.echo(f"jmlsync: --output: directory {output.parent} does not exist", err=True)
        sys.exit(1)
    try:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        click.echo(f"jmlsync: cannot create {output}: {exc.strerror}", err=True)
        sys.exit(1)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secret + "\n")


def tokens_file(config_path: Path, tokens_path: Path | None, *, creating: bool = False) -> Path:
    """``--file`` when given, else the configuration's ``[server].tokens_file``.

    A ``--file`` is the operator's own path: it must exist (or, when ``creating``, the
    directory it is to be made in), so a typo is one line, not a new tree. The configured
    file's directory is the service's state directory: made when missing (the first run).
    """
    if tokens_path is None:
        path = settings_or_exit(config_path).server.tokens_file
        if creating:
            path.parent.mkdir(parents=True, exist_ok=True)
        return path
    if creating and not tokens_path.parent.is_dir():
        click.echo(f"jmlsync: --file: directory {tokens_path.parent} does not exist", err=True)
        sys.exit(1)
    if not creating and not tokens_path.is_file():
        click.echo(f"jmlsync: --file: {tokens_path} does not exist", err=True)
        sys.exit(1)
    return tokens_path


def generate_credential(
    path: Path, *, label: str | None, basic: bool, if_missing: bool, output: Path | None
) -> None:
    """Add a labelled bearer token (or Basic credential) to ``path`` and print it once."""
    existing = _read(path)
    if if_missing and existing:
        click.echo(f"{path} already holds a token", err=True)
        return
    taken = {c.label for c in existing}
    label = label or _free_label(taken)
    if not LABEL.fullmatch(label):
        click.echo(
            f"jmlsync: bad label {label!r}: letters, digits, '.', '_' or '-', at most 64",
            err=True,
        )
        sys.exit(1)
    if label in taken:
        click.echo(f"jmlsync: {path} already has a credential labelled {label!r}", err=True)
        sys.exit(1)
    created = now_utc().strftime("%Y-%m-%dT%H:%M:%SZ")
    credential, secret = new_basic(label, created) if basic else new_bearer(label, created)
    shown = f"{credential.username}:{secret}" if basic else secret
    if output is not None:
        _save_secret(output, shown)
    edit_credentials(path, {}, append=credential.line())
    if output is None:
        click.echo(shown)
    what = "Basic credential (username:password)" if basic else "token"
    where = f" (saved to {output})" if output is not None else ""
    click.echo(
        f"added {what} {label!r}, fingerprint {credential.fingerprint}, to {path}{where};"
        " it is shown only now",
        err=True,
    )


async def _last_used(settings: Settings, fingerprints: list[str]) -> dict[str, str]:
    from jmlsync.runtime import open_store
    from jmlsync.store.queue import SqlQueue

    store = await open_store(settings)
    try:
        queue = SqlQueue(store.db)
        found = {fp: await last_used(queue, fp) for fp in fingerprints}
    finally:
        await store.close()
    return {fp: at for fp, at in found.items() if at is not None}


def _row(credential: Credential, used: dict[str, str]) -> dict[str, str | None]:
    return {
        "kind": credential.kind,
        "label": credential.label,
        "fingerprint": credential.fingerprint,
        "username": credential.username,
        "created": None if credential.created == "-" else credential.created,
        "last_used": used.get(credential.fingerprint),
        "stored": "plaintext" if credential.plaintext else "hashed",
    }


@click.command("list")
@CONFIG_OPTION
@FILE_OPTION
@click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table")
def token_list(config_path: Path, tokens_path: Path | None, output_format: str) -> None:
    """List the IdP credentials: kind, label, fingerprint, created, last used (to the minute,
    as recorded by the service in the store; not read with --file), and whether a line is
    still in plaintext; then the personal API tokens (kind personal, named personal:ID) with
    their user, scope and expiry (from the store; not with --file)."""
    path = tokens_file(config_path, tokens_path)
    credentials = _read(path)
    used: dict[str, str] = {}
    personal: list[dict[str, object]] = []
    if tokens_path is None:
        settings = settings_or_exit(config_path)
        # The store's own log lines would only add noise to the listing; the level is put
        # back after, so a caller in the same process (a test, an embedding) keeps its logs.
        logger = logging.getLogger("jmlsync")
        level = logger.level
        logger.setLevel(logging.WARNING)
        try:
            used = asyncio.run(_last_used(settings, [c.fingerprint for c in credentials]))
            personal = personal_rows(settings)
        except Exception as exc:
            click.echo(
                f"jmlsync: last use and personal tokens unknown, cannot read the store: {exc}",
                err=True,
            )
        finally:
            logger.setLevel(level)
    rows = [_row(c, used) for c in credentials]
    if output_format == "json":
        click.echo(json.dumps([*rows, *personal], indent=2))
        return
    if not rows and not personal:
        click.echo(f"no credentials in {path}")
        return
    click.echo(f"{'KIND':<8} {'LABEL':<24} {'FINGERPRINT':<13} {'CREATED':<21} LAST USED")
    for token in personal:
        revoked = f", revoked {token['revoked_at']}" if token["revoked_at"] else ""
        click.echo(
            f"{'personal':<8} {token['label']!s:<24} {'-':<13} {token['created']!s:<21}"
            f" -  (user {token['user']}, scope {token['scope']},"
            f" expires {token['expires_at']}{revoked})"
        )
    for row in rows:
        created = row["created"] or "-"
        note = "  (plaintext: run jmlsync token migrate)" if row["stored"] == "plaintext" else ""
        click.echo(
            f"{row['kind']:<8} {row['label']:<24} {row['fingerprint']:<13} {created:<21}"
            f" {row['last_used'] or 'never':<18}{note}".rstrip()
        )


@click.command("revoke")
@CONFIG_OPTION
@FILE_OPTION
@click.argument("name", metavar="LABEL|FINGERPRINT|personal:ID")
def token_revoke(config_path: Path, tokens_path: Path | None, name: str) -> None:
    """Remove a credential, named by its label or (at least 6 digits of) its fingerprint;
    or revoke a personal API token, named personal:ID as `token list` shows it.

    A running service refuses it from its next request. The last credential of the file
    cannot be revoked: the service would keep it (it never runs with none); add its
    replacement first.
    """
    if name.startswith(PREFIX) and tokens_path is None:
        revoke_personal(settings_or_exit(config_path), name)
        return
    path = tokens_file(config_path, tokens_path)
    credentials = _read(path)
    credential = find(credentials, name)
    if credential is None:
        click.echo(f"jmlsync: no credential labelled {name!r} or with that fingerprint", err=True)
        sys.exit(1)
    if len(credentials) == 1:
        click.echo(
            f"jmlsync: {credential.label!r} is the only credential in {path}: generate its"
            " replacement first",
            err=True,
        )
        sys.exit(1)
    edit_credentials(path, {credential.number: None})
    click.echo(f"revoked {credential.kind} {credential.label!r} ({credential.fingerprint})")


@click.command("migrate")
@CONFIG_OPTION
@FILE_OPTION
def token_migrate(config_path: Path, tokens_path: Path | None) -> None:
    """Rewrite the plaintext tokens of the tokens file hashed, in place.

    Each keeps working (the IdP changes nothing), under the label ``token list`` shows for it
    (``default``, ``default-2``...). Keep a copy of a token you still need to read: after this
    the file no longer holds it.
    """
    path = tokens_file(config_path, tokens_path)
    plain = [c for c in _read(path) if c.plaintext]
    if not plain:
        click.echo(f"{path}: nothing to migrate, every credential is hashed")
        return
    # When a plaintext token was made is unknown: its created stays "-".
    lines: dict[int, str | None] = {
        c.number: Credential(c.kind, c.label, c.digest).line() for c in plain
    }
    edit_credentials(path, lines)
    labels = ", ".join(c.label for c in plain)
    click.echo(f"{path}: hashed {len(plain)} plaintext token(s): {labels}")
