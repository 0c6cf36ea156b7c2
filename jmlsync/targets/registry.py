"""The one place that knows the target kinds: it opens a configured target by its ``kind``."""

from __future__ import annotations

from typing import assert_never

import aiohttp

from jmlsync.config import (
    AwsIamTargetSettings,
    AwsIdentityCenterTargetSettings,
    ConfigError,
    LedgerTargetSettings,
    ScimTargetSettings,
    TargetSettings,
)
from jmlsync.config_alibaba import AlibabaCloudSsoTargetSettings, AlibabaRamTargetSettings
from jmlsync.config_ldap import LdapTargetSettings
from jmlsync.ports import Target


async def open_target(
    name: str, settings: TargetSettings, *, http: aiohttp.ClientSession | None = None
) -> Target:
    """Open the target ``name`` configured by ``settings``; the caller closes it.

    ``http`` is the process's shared client session, for connectors that speak HTTP.
    """
    # Connectors are imported when configured, so a deployment without AWS targets never
    # loads the AWS SDK.
    match settings:
        case LedgerTargetSettings():
            from jmlsync.targets.ledger import LedgerTarget

            return await LedgerTarget.open(name, settings.path)
        case AwsIdentityCenterTargetSettings():
            from jmlsync.targets.aws_identity_center import IdentityCenterTarget

            return await IdentityCenterTarget.open(name, settings)
        case AwsIamTargetSettings():
            from jmlsync.targets.aws_iam import IamTarget

            return await IamTarget.open(name, settings)
        case ScimTargetSettings():
            from jmlsync.targets.scim import ScimTarget

            return await ScimTarget.open(name, settings, http=http)
        case AlibabaRamTargetSettings():
            from jmlsync.targets.alibaba_ram import RamTarget

            return await RamTarget.open(name, settings)
        case AlibabaCloudSsoTargetSettings():
            from jmlsync.targets.alibaba_cloudsso import CloudSsoTarget

            return await CloudSsoTarget.open(name, settings)
        case LdapTargetSettings():
            try:
                from jmlsync.targets.ldap import LdapTarget
            except ImportError as exc:
                raise ConfigError(
                    f"target {name!r}: kind 'ldap' needs bonsai: pip install 'jmlsync[ldap]'"
                ) from exc
            return await LdapTarget.open(name, settings)
        case _:
            # mypy fails here when a kind joins TargetSettings without a case above.
            assert_never(settings)
