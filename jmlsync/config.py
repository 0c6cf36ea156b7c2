"""The configuration: TOML validated by pydantic into one frozen :class:`Settings`.

Relative paths in the file (``tokens_file``, ``sqlite:///`` store URLs) are relative to the
directory of the configuration file, so a service finds its files whatever its working directory.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from jmlsync.config_access import AccessSettings, EligibilitySettings
from jmlsync.config_checks import SyntaxChecks, check_cron
from jmlsync.config_console import ConsoleSettings
from jmlsync.config_errors import ENV_PREFIX, describe
from jmlsync.config_reviews import ReviewSettings, review_problems
from jmlsync.config_scim import ScimSettings
from jmlsync.domain.errors import ConfigError
from jmlsync.targets.registry import TargetSettings

__all__ = ["ConfigError", "ScimSettings", "Settings", "load_settings"]

DEFAULT_BASE_PATH = "/scim/v2"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Section):
    listen: str = "127.0.0.1:8080"
    base_path: str = DEFAULT_BASE_PATH
    tokens_file: Path = Path("tokens")
    max_body_bytes: Annotated[int, Field(ge=1024)] = 1024 * 1024
    max_page_size: Annotated[int, Field(ge=1, le=10_000)] = 1000
    default_page_size: Annotated[int, Field(ge=1, le=10_000)] = 100
    public_url: str | None = None
    metrics_token_file: Path | None = None
    tls_certificate_file: Path | None = None
    tls_key_file: Path | None = None
    trusted_proxies: list[IPvAnyNetwork] = []
    header_timeout_seconds: Annotated[float, Field(gt=0)] = 30.0
    body_timeout_seconds: Annotated[float, Field(gt=0)] = 60.0
    auth_failures_per_address: Annotated[int, Field(ge=1)] = 10
    auth_throttle_seconds: Annotated[float, Field(gt=0)] = 60.0

    @field_validator("listen")
    @classmethod
    def _listen_is_host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"expected HOST:PORT, got {value!r}")
        return value

    @field_validator("base_path")
    @classmethod
    def _base_path_is_absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"must start with '/', got {value!r}")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _tls_files_together(self) -> ServerSettings:
        if (self.tls_certificate_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_certificate_file and tls_key_file are set together or not at all")
        return self

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class StoreSettings(_Section):
    """``[store]``: where the state lives, and (PostgreSQL) how long to wait for it."""

    url: str = "sqlite:///jmlsync.db"
    synchronous: str = "full"
    #: PostgreSQL: the longest wait to open a connection to the server.
    connect_timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 5.0
    #: PostgreSQL: the longest wait for one statement's answer.
    command_timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 15.0
    #: PostgreSQL: the longest wait for a free connection of the pool.
    acquire_timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 5.0

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError(
                f"unsupported store URL scheme in {value.split('://')[0]!r}:"
                " expected sqlite:///PATH or postgresql://..."
            )
        return value

    @property
    def is_postgres(self) -> bool:
        return self.url.startswith(("postgresql://", "postgres://"))

    @field_validator("synchronous")
    @classmethod
    def _sync_mode(cls, value: str) -> str:
        if value.lower() not in {"full", "normal", "extra"}:
            raise ValueError("expected 'full', 'normal' or 'extra'")
        return value.lower()

    @property
    def sqlite_path(self) -> Path:
        return Path(self.url.removeprefix("sqlite:///"))


class PipelineSettings(_Section):
    """``[pipeline]``: the workers that apply queued changes to the targets."""

    workers: Annotated[int, Field(ge=1, le=64)] = 4
    max_attempts: Annotated[int, Field(ge=1)] = 10
    retry_base_seconds: Annotated[float, Field(ge=0)] = 5.0
    retry_max_seconds: Annotated[float, Field(ge=0)] = 900.0
    call_attempts: Annotated[int, Field(ge=1)] = 5
    call_max_seconds: Annotated[float, Field(gt=0)] = 60.0
    call_initial_wait_seconds: Annotated[float, Field(ge=0)] = 0.2
    call_max_wait_seconds: Annotated[float, Field(ge=0)] = 10.0
    lease_seconds: Annotated[float, Field(gt=0)] = 30.0
    poll_seconds: Annotated[float, Field(gt=0)] = 1.0
    shutdown_grace_seconds: Annotated[float, Field(ge=0)] = 10.0
    max_leavers_per_minute: Annotated[int, Field(ge=1)] | None = None
    batch_size: Annotated[int, Field(ge=1, le=1000)] = 32
    leaver_workers: Annotated[int, Field(ge=0, le=63)] = 1


class GrantSettings(_Section):
    target: Annotated[str, Field(min_length=1)]
    role: Annotated[str, Field(min_length=1)]


class RuleSettings(_Section):
    """``[[rules]]``: members of ``group`` get ``grants``."""

    group: Annotated[str, Field(min_length=1)]
    group_external_id: str | None = None
    grants: Annotated[list[GrantSettings], Field(min_length=1)]
    privileged: bool = False
    user_filter: str | None = None


class ReconcileSettings(_Section):
    """``[reconcile]``: scheduled full reconciliation, drift and the mass-revocation guard."""

    schedule: str | None = "*/15 * * * *"
    drift: Literal["report", "remediate", "remediate-privileged"] = "report"
    max_revocations: Annotated[int, Field(ge=0)] = 50

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None, info: ValidationInfo) -> str | None:
        check_cron(value, info)
        return value or None


class SlaSettings(_Section):
    """``[sla]``: how fast a leaver must be cleared and verified."""

    leaver_seconds: Annotated[int, Field(gt=0)] = 900
    verify_every_seconds: Annotated[float, Field(gt=0)] = 60.0
    #: A mover's revocation must be applied and read back within this; None: leaver_seconds.
    mover_seconds: Annotated[int, Field(gt=0)] | None = None

    @property
    def mover_limit(self) -> int:
        """``mover_seconds``, or ``leaver_seconds`` when not set."""
        return self.mover_seconds if self.mover_seconds is not None else self.leaver_seconds


class AlertSettings(_Section):
    """``[alerts]``: where alerts go besides the log."""

    webhook_url: SecretStr | None = None
    webhook_url_file: Path | None = None
    dedupe_seconds: Annotated[float, Field(ge=0)] = 3600.0
    timeout_seconds: Annotated[float, Field(gt=0)] = 10.0
    retry_max_wait_seconds: Annotated[float, Field(ge=0)] = 60.0
    auth_failures_per_minute: Annotated[int, Field(ge=1)] = 20
    #: New unmanaged findings a run alerts one by one; above it, one alert per target says
    #: how many (privileged findings are always alerted one by one).
    drift_alerts_per_run: Annotated[int, Field(ge=0)] = 20


class SafetySettings(_Section):
    """``[safety]``: accounts jmlsync never changes in any target (break-glass)."""

    protected_users: list[str] = []


class RetentionSettings(_Section):
    """``[retention]``: how long housekeeping keeps history."""

    days: Annotated[int, Field(ge=1)] = 400


class Settings(_Section):
    """Everything jmlsync reads from its configuration file."""

    server: ServerSettings = ServerSettings()
    scim: ScimSettings = ScimSettings()
    store: StoreSettings = StoreSettings()
    pipeline: PipelineSettings = PipelineSettings()
    reconcile: ReconcileSettings = ReconcileSettings()
    sla: SlaSettings = SlaSettings()
    alerts: AlertSettings = AlertSettings()
    safety: SafetySettings = SafetySettings()
    retention: RetentionSettings = RetentionSettings()
    access: AccessSettings = AccessSettings()
    console: ConsoleSettings = ConsoleSettings()
    targets: dict[str, TargetSettings] = {}
    rules: list[RuleSettings] = []
    reviews: list[ReviewSettings] = []
    eligibility: list[EligibilitySettings] = []
    source: Path | None = Field(default=None, exclude=True)


def _resolve(base: Path, path: Path) -> Path:
    return path if path.is_absolute() else Path(os.path.normpath(base / path))


def _anchor_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make relative file paths relative to the configuration file's directory."""
    server = raw.get("server")
    for key in ("tokens_file", "metrics_token_file", "tls_certificate_file", "tls_key_file"):
        if isinstance(server, dict) and isinstance(server.get(key), str):
            server[key] = str(_resolve(base, Path(server[key])))
    alerts = raw.get("alerts")
    if isinstance(alerts, dict) and isinstance(alerts.get("webhook_url_file"), str):
        alerts["webhook_url_file"] = str(_resolve(base, Path(alerts["webhook_url_file"])))
    oidc = raw.get("console", {}).get("oidc") if isinstance(raw.get("console"), dict) else None
    if isinstance(oidc, dict) and isinstance(oidc.get("client_secret_file"), str):
        oidc["client_secret_file"] = str(_resolve(base, Path(oidc["client_secret_file"])))
    targets = raw.get("targets")
    if isinstance(targets, dict):
        for target in targets.values():
            for key in ("path", "token_file", "bind_password_file", "ca_file"):
                if isinstance(target, dict) and isinstance(target.get(key), str):
                    target[key] = str(_resolve(base, Path(target[key])))
    store = raw.get("store")
    if isinstance(store, dict) and isinstance(store.get("url"), str):
        url = store["url"]
        if url.startswith("sqlite:///"):
            path = Path(url.removeprefix("sqlite:///"))
            store["url"] = "sqlite:///" + str(_resolve(base, path))
    return raw


def eligibility_problems(settings: Settings) -> list[str]:
    """Eligibilities must name configured targets and have unique names; a privileged grant
    (an eligibility marked privileged, or a role some privileged rule names) is never
    self-service; approvals need approver groups."""
    privileged_roles = {
        (g.target, g.role) for r in settings.rules if r.privileged for g in r.grants
    }
    problems, seen = [], set()
    for e, item in enumerate(settings.eligibility, 1):
        where = f"  eligibility[{e}]"
        if item.name in seen:
            problems.append(f"{where}.name: duplicate eligibility name {item.name!r}")
        seen.add(item.name)
        if not item.groups and not item.users:
            problems.append(f"{where}: names nobody who may request (set groups or users)")
        if item.approvals > 0 and not item.approvers:
            problems.append(f"{where}.approvers: {item.approvals} approval(s) need approver groups")
        for g, grant in enumerate(item.grants, 1):
            if grant.target not in settings.targets:
                problems.append(
                    f"{where}.grants[{g}].target: unknown target {grant.target!r}"
                    f" (configured: {', '.join(sorted(settings.targets)) or 'none'})"
                )
            privileged = item.privileged or (grant.target, grant.role) in privileged_roles
            if item.approvals == 0 and privileged:
                problems.append(
                    f"{where}.approvals: 0 (self-service) is refused for the privileged"
                    f" grant {grant.target}/{grant.role}"
                )
    return problems


def _cross_check(settings: Settings, source: Path, checks: SyntaxChecks | None) -> None:
    """What one field cannot check alone: rules (and review campaigns) must name configured
    targets, and rules' filters the attributes the schemas (declared extensions) define."""
    problems = [
        f"  rules[{r}].grants[{g}].target: unknown target {grant.target!r}"
        f" (configured: {', '.join(sorted(settings.targets)) or 'none'})"
        for r, rule in enumerate(settings.rules, 1)
        for g, grant in enumerate(rule.grants, 1)
        if grant.target not in settings.targets
    ]
    problems += [
        f"  rules[{r}].grants[{g}].role: {problem}"
        for r, rule in enumerate(settings.rules, 1)
        for g, grant in enumerate(rule.grants, 1)
        if grant.target in settings.targets
        and (problem := settings.targets[grant.target].role_problem(grant.role))
    ]
    if checks is not None and checks.user_filters is not None:
        problems += checks.user_filters(settings)
    problems += review_problems(settings.reviews, set(settings.targets), len(settings.rules))
    problems += eligibility_problems(settings)
    if problems:
        raise ConfigError("\n".join([f"{source}: invalid configuration", *problems]))


def _env_value(text: str) -> Any:
    """A TOML value when the text is one (numbers, booleans, arrays), else the text itself."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def _apply_environment(
    raw: dict[str, Any], environ: Mapping[str, str], origins: dict[tuple[str, ...], str]
) -> dict[str, Any]:
    """Overlay ``JMLSYNC_SECTION__KEY=value`` variables on the file's values, noting in
    ``origins`` which variable set which key (an error then names the variable).

    ``JMLSYNC_SERVER__LISTEN=0.0.0.0:8080`` sets ``[server].listen``; deeper keys take more
    ``__`` parts (``JMLSYNC_TARGETS__SANDBOX__PATH``). Names are lower-cased. A name without
    ``__`` (``JMLSYNC_CONFIG``) is not an override.
    """
    for name, text in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        keys = [part.lower() for part in name.removeprefix(ENV_PREFIX).split("__")]
        node = raw
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{name}: {'.'.join(keys[:-1])} is not a table")
            node = child
        node[keys[-1]] = _env_value(text)
        origins[tuple(keys)] = name
    return raw


def load_settings(
    path: Path, environ: Mapping[str, str] | None = None, *, checks: SyntaxChecks | None = None
) -> Settings:
    """Read and validate the configuration file at ``path`` with the ``JMLSYNC_...``
    environment overrides; raise ConfigError on any problem. ``checks`` adds the cron and
    rule-filter syntax (the composition root gives them: config does not import their
    parsers); without them those strings are checked when used."""
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration: {exc.strerror}") from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    origins: dict[tuple[str, ...], str] = {}
    raw = _apply_environment(raw, os.environ if environ is None else environ, origins)
    raw = _anchor_paths(raw, path.resolve().parent)
    try:
        settings = Settings.model_validate(raw, context={"checks": checks})
    except ValidationError as exc:
        raise ConfigError(describe(exc, path, Settings, origins)) from exc
    _cross_check(settings, path, checks)
    return settings.model_copy(update={"source": path})
