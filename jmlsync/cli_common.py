"""What every command shares: the --config option and loading it with a clear error."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from jmlsync.config import ConfigError, Settings, load_settings
from jmlsync.domain.errors import StoreUnavailable

#: The environment variable that names the configuration file when --config is not given.
CONFIG_ENVVAR = "JMLSYNC_CONFIG"

CONFIG_OPTION = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("config/jmlsync.toml"),
    envvar=CONFIG_ENVVAR,
    show_envvar=True,
    show_default=True,
    help="Configuration file (TOML).",
)


def settings_or_exit(path: Path) -> Settings:
    """The validated configuration; on error, the message on stderr and exit status 1."""
    try:
        return load_settings(path)
    except ConfigError as exc:
        click.echo(f"jmlsync: {exc}", err=True)
        sys.exit(1)


class Commands(click.Group):
    """The command group: a store that cannot be reached or refuses a write ends any command
    with one line on stderr and exit status 1, not a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except StoreUnavailable as exc:
            click.echo(f"jmlsync: the store is unavailable: {exc}", err=True)
            sys.exit(1)
