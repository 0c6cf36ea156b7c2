"""The ``jmlsync`` command: thin wrappers that load the configuration and call the service."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from jmlsync import __version__
from jmlsync.cli.access import access as access_group
from jmlsync.cli.alerts import alerts as alerts_group
from jmlsync.cli.common import CONFIG_OPTION, Commands, settings_or_exit
from jmlsync.cli.config import config as config_group
from jmlsync.cli.db import db as db_group
from jmlsync.cli.ops import audit, queue
from jmlsync.cli.reconcile import explain
from jmlsync.cli.reconcile import reconcile as reconcile_command
from jmlsync.cli.reviews import review
from jmlsync.cli.sla import sla_report
from jmlsync.cli.status import status as status_command
from jmlsync.cli.token import (
    FILE_OPTION,
    generate_credential,
    token_list,
    token_migrate,
    token_revoke,
    tokens_file,
)
from jmlsync.cli.token_personal import SCOPES, generate_personal
from jmlsync.config import ConfigError
from jmlsync.ops.logs import setup_logging, written_in_background
from jmlsync.ops.tls import TlsFileError
from jmlsync.scim.auth import TokenFileError
from jmlsync.store.lock import StoreLocked


@click.group(cls=Commands)
@click.version_option(__version__, prog_name="jmlsync")
def main() -> None:
    """jmlsync: joiner-mover-leaver sync from your identity provider to your clouds."""


main.add_command(reconcile_command)
main.add_command(explain)
main.add_command(config_group)
main.add_command(db_group)
main.add_command(queue)
main.add_command(audit)
main.add_command(status_command)
main.add_command(sla_report)
main.add_command(alerts_group)
main.add_command(review)
main.add_command(access_group)


@main.command()
@CONFIG_OPTION
def serve(config_path: Path) -> None:
    """Serve the SCIM endpoint until SIGTERM or SIGINT."""
    from jmlsync.service import serve as run

    settings = settings_or_exit(config_path)
    setup_logging()
    try:
        with written_in_background():
            asyncio.run(run(settings))
    except TokenFileError as exc:
        click.echo(f"jmlsync: {exc} ([server].tokens_file in {config_path})", err=True)
        sys.exit(1)
    except TlsFileError as exc:
        click.echo(f"jmlsync: {exc} ([server].tls_certificate_file in {config_path})", err=True)
        sys.exit(1)
    except StoreLocked as exc:
        click.echo(f"jmlsync: {exc}", err=True)
        sys.exit(1)
    except ConfigError as exc:
        # A target's secret or CA file, read when the target opens.
        click.echo(f"jmlsync: {exc} (in {config_path})", err=True)
        sys.exit(1)
    except OSError as exc:
        click.echo(f"jmlsync: cannot serve on {settings.server.listen}: {exc}", err=True)
        sys.exit(1)


@main.group("token", cls=Commands)
def token_group() -> None:
    """Manage the credentials IdPs present (bearer tokens and HTTP Basic passwords) and
    personal API tokens (--user)."""


@token_group.command("generate")
@CONFIG_OPTION
@FILE_OPTION
@click.option(
    "--if-missing",
    is_flag=True,
    help="Do nothing when the tokens file already holds a token.",
)
@click.option(
    "--label",
    help="A unique name for the credential (e.g. okta): its audit actor is scim:LABEL."
    " Default: default (or default-2, ...).",
)
@click.option(
    "--basic",
    is_flag=True,
    help="An HTTP Basic username and password (the username is the label) instead of a token.",
)
@click.option(
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the secret to this new file (mode 0600) instead of printing it.",
)
@click.option(
    "--user",
    "user",
    default=None,
    metavar="USERNAME",
    help="Make a personal API token for this directory user instead (stored hashed).",
)
@click.option(
    "--scope",
    type=click.Choice(SCOPES),
    default="access",
    show_default=True,
    help="What a personal token may call: access (time-bound access) or reviews (access reviews).",
)
@click.option("--days", type=click.IntRange(1, 366), default=None, help="Validity (personal).")
def token_generate(
    config_path: Path,
    tokens_path: Path | None,
    if_missing: bool,
    label: str | None,
    basic: bool,
    output: Path | None,
    user: str | None,
    scope: str,
    days: int | None,
) -> None:
    """Add a new random credential to [server].tokens_file, stored hashed; print it once.

    Every credential in the file is valid at once: generate the new one, give it to the
    IdP, then `jmlsync token revoke` the old one. The file is written readable by its owner
    only.

    With --user, make a personal token for the HTTP API instead: printed once, stored only
    as its hash with an expiry ([access].token_days unless --days), never valid for SCIM.
    """
    if user is not None:
        generate_personal(settings_or_exit(config_path), user, scope, days)
        return
    generate_credential(
        tokens_file(config_path, tokens_path, creating=True),
        label=label,
        basic=basic,
        if_missing=if_missing,
        output=output,
    )


token_group.add_command(token_list)
token_group.add_command(token_revoke)
token_group.add_command(token_migrate)
