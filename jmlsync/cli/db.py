"""``jmlsync db``: migrate a store, and copy one store into another."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from jmlsync.cli.common import CONFIG_OPTION, settings_or_exit
from jmlsync.report import tables
from jmlsync.store.copy import CopyError, copy_store
from jmlsync.store.directory import SqlStore


async def open_url(url: str) -> SqlStore:
    """The store at a ``sqlite:///PATH`` or ``postgresql://...`` URL, migrated."""
    if url.startswith(("postgresql://", "postgres://")):
        return await SqlStore.open_postgres(url)
    if url.startswith("sqlite:///"):
        return await SqlStore.open(Path(url.removeprefix("sqlite:///")))
    raise click.BadParameter(f"expected sqlite:///PATH or postgresql://..., got {url!r}")


@click.group()
def db() -> None:
    """Migrate the store, or copy it to another database."""


@db.command("upgrade")
@CONFIG_OPTION
def upgrade(config_path: Path) -> None:
    """Apply pending migrations to [store].url (SQLite or PostgreSQL) and report the version."""
    settings = settings_or_exit(config_path)

    async def run() -> int:
        store = await open_url(settings.store.url)
        try:
            rows = await store.db.reader.execute_fetchall(
                "SELECT max(version) FROM schema_migrations"
            )
            return int(rows[0][0])
        finally:
            await store.close()

    click.echo(f"store at schema version {asyncio.run(run())}")


@db.command("copy")
@click.option("--from", "source", required=True, help="sqlite:///PATH or postgresql://...")
@click.option("--to", "destination", required=True, help="an empty store's URL")
def copy(source: str, destination: str) -> None:
    """Copy every user, group, grant, leaver record and the audit chain into an empty store.

    Stop the service first. Then point [store].url at the destination and run
    `jmlsync audit verify`.
    """

    async def run() -> dict[str, int]:
        origin = await open_url(source)
        try:
            target = await open_url(destination)
            try:
                return await copy_store(origin, target)
            finally:
                await target.close()
        finally:
            await origin.close()

    try:
        counts = asyncio.run(run())
    except CopyError as exc:
        click.echo(f"jmlsync: {exc}", err=True)
        sys.exit(1)
    rows = [(table, str(count)) for table, count in counts.items()]
    click.echo("\n".join(tables.render(("TABLE", "ROWS"), rows, right=(1,))))
