"""The settings of the Alibaba Cloud target kinds, ``alibaba-ram`` and ``alibaba-cloudsso``.

A leaf module, like config.py. Credentials come from the standard Alibaba Cloud credential
chain (``ALIBABA_CLOUD_ACCESS_KEY_ID``/``_SECRET``, the profile files, an ECS RAM role),
never from the configuration file.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator

from jmlsync.targets.settings import TargetSection

#: The role syntax of each kind, checked by ``config check`` and by the connectors.
RAM_ROLE = re.compile(
    r"group:(?P<group>[A-Za-z0-9._-]{1,128})"
    r"|policy:(?P<type>System|Custom)/(?P<policy>[A-Za-z0-9._-]{1,128})",
    re.ASCII,
)
RAM_ROLE_SYNTAX = "'group:' and a RAM group name, or 'policy:System/NAME' or 'policy:Custom/NAME'"
CLOUDSSO_ROLE = re.compile(r"(?P<account>\d{1,32})/(?P<name>[A-Za-z0-9._-]{1,64})", re.ASCII)
CLOUDSSO_ROLE_SYNTAX = (
    "ACCOUNT_ID/ACCESS_CONFIGURATION_NAME"
    " (a resource-directory account id, '/', an access configuration name)"
)

#: ``HOST`` or ``HOST:PORT``, without a scheme (the SDK takes the scheme from ``protocol``).
_ENDPOINT = re.compile(r"[A-Za-z0-9.\[\]:-]+")


class _AlibabaTargetSection(TargetSection):
    """Keys every Alibaba Cloud target has (``max_concurrency`` as every target kind)."""

    region: Annotated[str, Field(min_length=1)]
    endpoint: str | None = None
    protocol: Literal["https", "http"] = "https"
    timeout_seconds: Annotated[float, Field(gt=0)] = 30.0
    provision_users: bool = True

    @field_validator("endpoint")
    @classmethod
    def _endpoint_is_a_host(cls, value: str | None) -> str | None:
        if value is not None and not _ENDPOINT.fullmatch(value):
            raise ValueError(
                f"expected HOST or HOST:PORT without a scheme (set protocol), got {value!r}"
            )
        return value


class AlibabaRamTargetSettings(_AlibabaTargetSection):
    """``kind = "alibaba-ram"``: RAM users, their group memberships and attached policies."""

    kind: Literal["alibaba-ram"]
    region: Annotated[str, Field(min_length=1)] = "cn-hangzhou"
    domain_alias: str | None = None

    def role_problem(self, role: str) -> str | None:
        return None if RAM_ROLE.fullmatch(role) else f"{role!r} is not {RAM_ROLE_SYNTAX}"

    @field_validator("domain_alias")
    @classmethod
    def _bare_domain(cls, value: str | None) -> str | None:
        if value is not None and (not value or "@" in value):
            raise ValueError(f"expected a domain such as example.org, got {value!r}")
        return value


class AlibabaCloudSsoTargetSettings(_AlibabaTargetSection):
    """``kind = "alibaba-cloudsso"``: access configurations assigned on resource-directory
    accounts to CloudSSO users."""

    kind: Literal["alibaba-cloudsso"]
    region: Annotated[str, Field(min_length=1)] = "cn-shanghai"
    directory_id: str | None = None

    def role_problem(self, role: str) -> str | None:
        if CLOUDSSO_ROLE.fullmatch(role):
            return None
        return f"{role!r} is not {CLOUDSSO_ROLE_SYNTAX}"
