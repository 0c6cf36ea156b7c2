"""The one place that lists the target kinds: each kind's settings model (the
``[targets.NAME]`` table the configuration validates) and how to open it.

Connectors are imported when a target of their kind is opened, so a deployment without AWS
targets never loads the AWS SDK; the settings models are light and always loaded.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Generic, TypeAlias, TypeVar, Union

import aiohttp
from pydantic import Field

from jmlsync.domain.errors import ConfigError
from jmlsync.ports import Target
from jmlsync.targets.alibaba_settings import (
    AlibabaCloudSsoTargetSettings,
    AlibabaRamTargetSettings,
)
from jmlsync.targets.aws_settings import AwsIamTargetSettings, AwsIdentityCenterTargetSettings
from jmlsync.targets.ldap_settings import LdapTargetSettings
from jmlsync.targets.ledger import LedgerTargetSettings
from jmlsync.targets.scim import ScimTargetSettings
from jmlsync.targets.settings import TargetSection

S = TypeVar("S", bound=TargetSection)

Http: TypeAlias = aiohttp.ClientSession | None


@dataclass(frozen=True)
class Kind(Generic[S]):
    """One connector kind: its settings model and how a configured target of it opens."""

    settings: type[S]
    open: Callable[[str, S, Http], Awaitable[Target]]

    @property
    def name(self) -> str:
        """The ``kind`` value that selects it (the Literal of its settings model)."""
        (value,) = self.settings.model_fields["kind"].annotation.__args__  # type: ignore[union-attr]
        return str(value)


async def _ledger(name: str, settings: LedgerTargetSettings, _http: Http) -> Target:
    from jmlsync.targets.ledger import LedgerTarget

    return await LedgerTarget.open(name, settings.path)


async def _identity_center(
    name: str, settings: AwsIdentityCenterTargetSettings, _http: Http
) -> Target:
    from jmlsync.targets.aws_identity_center import IdentityCenterTarget

    return await IdentityCenterTarget.open(name, settings)


async def _iam(name: str, settings: AwsIamTargetSettings, _http: Http) -> Target:
    from jmlsync.targets.aws_iam import IamTarget

    return await IamTarget.open(name, settings)


async def _scim(name: str, settings: ScimTargetSettings, http: Http) -> Target:
    from jmlsync.targets.scim import ScimTarget

    return await ScimTarget.open(name, settings, http=http)


async def _ram(name: str, settings: AlibabaRamTargetSettings, _http: Http) -> Target:
    from jmlsync.targets.alibaba_ram import RamTarget

    return await RamTarget.open(name, settings)


async def _cloudsso(name: str, settings: AlibabaCloudSsoTargetSettings, _http: Http) -> Target:
    from jmlsync.targets.alibaba_cloudsso import CloudSsoTarget

    return await CloudSsoTarget.open(name, settings)


async def _ldap(name: str, settings: LdapTargetSettings, _http: Http) -> Target:
    try:
        from jmlsync.targets.ldap import LdapTarget
    except ImportError as exc:
        raise ConfigError(
            f"target {name!r}: kind 'ldap' needs bonsai: pip install 'jmlsync[ldap]'"
        ) from exc
    return await LdapTarget.open(name, settings)


_KINDS: tuple[Kind[Any], ...] = (
    Kind(LedgerTargetSettings, _ledger),
    Kind(AwsIdentityCenterTargetSettings, _identity_center),
    Kind(AwsIamTargetSettings, _iam),
    Kind(ScimTargetSettings, _scim),
    Kind(AlibabaRamTargetSettings, _ram),
    Kind(AlibabaCloudSsoTargetSettings, _cloudsso),
    Kind(LdapTargetSettings, _ldap),
)

#: Every target kind by its ``kind`` value; a new connector adds one entry above.
KINDS: dict[str, Kind[Any]] = {kind.name: kind for kind in _KINDS}

if TYPE_CHECKING:
    TargetSettings: TypeAlias = TargetSection
else:
    #: The ``[targets.NAME]`` table: one of the kinds' models, told apart by ``kind``.
    TargetSettings = Annotated[
        Union[tuple(kind.settings for kind in _KINDS)],  # noqa: UP007
        Field(discriminator="kind"),
    ]


async def open_target(name: str, settings: TargetSection, *, http: Http = None) -> Target:
    """Open the target ``name`` configured by ``settings``; the caller closes it.

    ``http`` is the process's shared client session, for connectors that speak HTTP.
    """
    for kind in _KINDS:
        if isinstance(settings, kind.settings):
            return await kind.open(name, settings, http)
    raise ConfigError(f"target {name!r}: unknown kind {type(settings).__name__}")
