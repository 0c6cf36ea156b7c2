"""``[console]`` and ``[console.oidc]`` of the configuration: the web console and its
OpenID Connect sign-in. A leaf module, like config.py."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConsoleOidcSettings(_Section):
    """``[console.oidc]``: the identity provider people sign in to the console with."""

    #: The issuer URL; its ``/.well-known/openid-configuration`` names every endpoint.
    issuer: str = ""
    client_id: str = ""
    #: A file holding the client secret (one line); None for a public client (PKCE only).
    client_secret_file: Path | None = None
    scopes: list[str] = ["openid", "email", "profile"]
    #: The ID token claim matched, case-insensitively, to a directory user's userName.
    username_claim: Annotated[str, Field(min_length=1)] = "email"
    #: A claim holding the person's groups: recorded in the sign-in's audit row only; who
    #: may do what always comes from the directory.
    groups_claim: str | None = None
    #: Tolerated difference between this host's clock and the issuer's (exp, iat, nbf).
    clock_skew_seconds: Annotated[int, Field(ge=0, le=600)] = 60

    @field_validator("issuer")
    @classmethod
    def _issuer_is_url(cls, value: str) -> str:
        if value and not value.startswith(("https://", "http://")):
            raise ValueError(f"expected an https:// URL, got {value!r}")
        return value

    @field_validator("scopes")
    @classmethod
    def _openid_scope(cls, value: list[str]) -> list[str]:
        if "openid" not in value:
            raise ValueError("must include 'openid'")
        return value


class ConsoleSettings(_Section):
    """``[console]``: the web console served by ``jmlsync serve``."""

    enabled: bool = False
    base_path: str = "/console"
    #: Members of these directory groups (displayName, case-insensitive) are admins.
    admin_groups: list[str] = []
    #: Plain-HTTP cookies (no ``Secure``) and an ``http://`` issuer: loopback tests only.
    insecure_http: bool = False
    #: A session unused this long ends.
    idle_timeout_seconds: Annotated[int, Field(ge=1)] = 1800
    #: A session ends this long after sign-in, used or not.
    absolute_timeout_seconds: Annotated[int, Field(ge=1)] = 12 * 3600
    #: The URL the console is reached at (scheme, host, port), for the OIDC redirect URI;
    #: None: ``[server].public_url``, else the request's own host.
    public_url: str | None = None
    oidc: ConsoleOidcSettings = ConsoleOidcSettings()

    @field_validator("base_path")
    @classmethod
    def _base_path(cls, value: str) -> str:
        value = value.rstrip("/")
        if not value.startswith("/") or value == "":
            raise ValueError(f"must start with '/' and not be '/', got {value!r}")
        return value

    @model_validator(mode="after")
    def _complete_when_enabled(self) -> ConsoleSettings:
        if not self.enabled:
            return self
        missing = [key for key in ("issuer", "client_id") if not getattr(self.oidc, key)]
        if missing:
            raise ValueError(f"enabled, but [console.oidc] lacks {', '.join(missing)}")
        if self.oidc.issuer.startswith("http://") and not self.insecure_http:
            raise ValueError("[console.oidc].issuer must be https:// unless insecure_http = true")
        if not self.admin_groups:
            raise ValueError("enabled, but admin_groups is empty: nobody could use it")
        if self.idle_timeout_seconds > self.absolute_timeout_seconds:
            raise ValueError("idle_timeout_seconds is longer than absolute_timeout_seconds")
        return self
