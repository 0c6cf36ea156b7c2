"""What every command shares: the --config option, loading it with a clear error, and the exit
codes every command keeps (usage errors 64, other errors one line and 1)."""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path
from typing import Any

import click

from jmlsync.config import ConfigError, Settings
from jmlsync.domain.errors import StoreUnavailable
from jmlsync.policy_config import load_checked_settings

#: The environment variable that names the configuration file when --config is not given.
CONFIG_ENVVAR = "JMLSYNC_CONFIG"

#: Exit codes every command keeps. 2 and 3 belong to ``reconcile`` (changes pending, held);
#: a usage error is EX_USAGE from sysexits.h, never 2, so a CI gate cannot read a typo as drift.
EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 64

log = logging.getLogger("jmlsync.cli")

#: The context meta key ``--debug`` sets.
DEBUG = "jmlsync.debug"

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
        return load_checked_settings(path)
    except ConfigError as exc:
        click.echo(f"jmlsync: {exc}", err=True)
        sys.exit(EXIT_ERROR)


def one_line(exc: BaseException) -> str:
    """An unexpected exception as one line: its class and message. A task group's lone
    failure is shown as itself, not as the group that carried it."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _debug(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta[DEBUG] = True


class Commands(click.Group):
    """The command group. Whatever group or command is below it:

    - a usage error (unknown option, bad value, missing argument) exits 64, not click's 2;
    - a store that cannot be reached or refuses a write ends with one line and exit 1;
    - any other unexpected error ends with ``jmlsync: <one line>`` and exit 1, its traceback
      logged at debug level only (shown with ``--debug``).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.append(
            click.Option(
                ["--debug"],
                is_flag=True,
                expose_value=False,
                is_eager=True,
                callback=_debug,
                help="Show the traceback of an unexpected error.",
            )
        )

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            exc.exit_code = EXIT_USAGE  # type: ignore[misc]
            raise

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            exc.exit_code = EXIT_USAGE  # type: ignore[misc]
            raise
        except (click.exceptions.Exit, click.Abort, click.ClickException):
            raise
        except StoreUnavailable as exc:
            click.echo(f"jmlsync: the store is unavailable: {exc}", err=True)
            sys.exit(EXIT_ERROR)
        except Exception as exc:
            log.debug("unexpected error", exc_info=True)
            hint = " (--debug shows the traceback)"
            if ctx.meta.get(DEBUG):
                click.echo(traceback.format_exc().rstrip(), err=True)
                hint = ""
            click.echo(f"jmlsync: unexpected error: {one_line(exc)}{hint}", err=True)
            sys.exit(EXIT_ERROR)
