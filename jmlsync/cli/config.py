"""``jmlsync config check`` and ``jmlsync config schema``."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import click

from jmlsync.cli.common import CONFIG_OPTION, settings_or_exit
from jmlsync.config import Settings
from jmlsync.domain.access import GroupInfo
from jmlsync.domain.policy import rule_matches_group
from jmlsync.policy_config import rules_from_settings
from jmlsync.runtime import open_store
from jmlsync.scim.auth import TokenFileError, check_private
from jmlsync.scim.credentials import CredentialsError, read_credentials


@click.group()
def config() -> None:
    """Check the configuration, or print its JSON Schema."""


async def _known_groups(settings: Settings) -> list[GroupInfo] | None:
    """The groups the IdP has pushed so far; None when there is no store yet."""
    if not settings.store.is_postgres and not settings.store.sqlite_path.exists():
        return None
    store = await open_store(settings)
    try:
        return await store.list_groups()
    finally:
        await store.close()


def _warnings(settings: Settings, groups: list[GroupInfo] | None) -> list[str]:
    if groups is None:
        return [f"no store at {settings.store.sqlite_path} yet: no group has been pushed"]
    warnings = []
    for rule in rules_from_settings(settings):
        if not any(rule_matches_group(rule, group) for group in groups):
            named = (
                f"externalId {rule.group_external_id!r}"
                if rule.group_external_id
                else f"displayName {rule.group!r}"
            )
            warnings.append(f"rules[{rule.index}]: no group with {named} has been pushed yet")
    names = {group.display_name.casefold() for group in groups}
    for index, review in enumerate(settings.reviews, 1):
        specs = [*review.reviewers, *(r for owner in review.owners for r in owner.reviewers)]
        for spec in dict.fromkeys(specs):
            group = spec.removeprefix("group:")
            if spec.startswith("group:") and group.casefold() not in names:
                warnings.append(
                    f"reviews[{index}]: reviewer group {group!r} has not been pushed yet"
                )
    return warnings


@config.command("check")
@CONFIG_OPTION
def check(config_path: Path) -> None:
    """Validate the configuration and summarise it; exit 1 on an error.

    Warns (without failing) about rules whose group the IdP has not pushed yet. A tokens file
    that exists but is open to group or others is an error, as it is for ``serve``.
    """
    settings = settings_or_exit(config_path)
    for path in (settings.server.tokens_file, settings.server.metrics_token_file):
        if path is None or not path.exists():
            continue
        try:
            check_private(path)
            read_credentials(path)
        except (TokenFileError, CredentialsError) as exc:
            click.echo(f"jmlsync: {exc}", err=True)
            sys.exit(1)
    click.echo(f"{config_path}: OK")
    click.echo(f"targets ({len(settings.targets)}):")
    for name, target in sorted(settings.targets.items()):
        click.echo(f"  {name}: kind {target.kind}")
    click.echo(f"rules ({len(settings.rules)}):")
    for index, rule in enumerate(settings.rules, 1):
        grants = ", ".join(f"{g.target}:{g.role}" for g in rule.grants)
        flags = " [privileged]" if rule.privileged else ""
        narrowed = f" where {rule.user_filter}" if rule.user_filter else ""
        click.echo(f"  [{index}] group {rule.group!r}{narrowed} -> {grants}{flags}")
    click.echo(f"eligibility ({len(settings.eligibility)}):")
    for item in settings.eligibility:
        grants = ", ".join(f"{g.target}:{g.role}" for g in item.grants)
        who = ", ".join([*(f"group {g!r}" for g in item.groups), *item.users])
        click.echo(
            f"  {item.name}: {who} -> {grants} for at most {item.max_duration},"
            f" {item.approvals} approval(s){' [privileged]' if item.privileged else ''}"
        )
    click.echo(f"extension schemas ({len(settings.scim.extensions)}):")
    for extension in settings.scim.extensions:
        names = ", ".join(attribute.name for attribute in extension.attributes)
        click.echo(f"  {extension.urn} ({extension.resource}): {names}")
    click.echo(f"reviews ({len(settings.reviews)}):")
    for review in settings.reviews:
        scope = review.scope if isinstance(review.scope, str) else "listed"
        when = f"schedule {review.schedule!r}" if review.schedule else "started by hand"
        click.echo(
            f"  {review.name}: scope {scope}, reviewers {', '.join(review.reviewers)}, {when},"
            f" on_no_decision {review.on_no_decision}"
        )
    console = settings.console
    if console.enabled:
        click.echo(f"console: {console.base_path}, sign-in at {console.oidc.issuer}")
        secret = console.oidc.client_secret_file
        if secret is not None and not secret.is_file():
            click.echo(f"jmlsync: [console.oidc].client_secret_file {secret} is missing", err=True)
            sys.exit(1)
    for warning in _warnings(settings, asyncio.run(_known_groups(settings))):
        click.echo(f"warning: {warning}", err=True)


@config.command("schema")
def schema() -> None:
    """Print the JSON Schema of the configuration file."""
    document = Settings.model_json_schema()
    document.get("properties", {}).pop("source", None)
    click.echo(json.dumps(document, indent=2))
