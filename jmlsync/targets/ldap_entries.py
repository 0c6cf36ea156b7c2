"""What the LDAP connector writes into entries, as pure functions: the modification that disables
(or enables again) an account in each directory, and a provisioned user's entry.

The ``disable`` variants:

- ``ppolicy`` (OpenLDAP with the ppolicy overlay): ``pwdAccountLockedTime: 000001010000Z``, the
  value the overlay reads as "locked until an administrator unlocks". A lock the overlay set by
  itself after failed binds (any other time) is not ours: it is neither reported as disabled
  nor lifted.
- ``389ds`` (389 Directory Server, Red Hat Directory Server, FreeIPA): ``nsAccountLock: TRUE``.
- ``ad`` (Active Directory): bit 2 (ACCOUNTDISABLE) of ``userAccountControl``, the other bits
  kept; the value is read and replaced under the connector's per-user lock.
"""

from __future__ import annotations

import re
from typing import Literal

from jmlsync.domain.access import PrincipalSpec
from jmlsync.domain.errors import PermanentTargetError
from jmlsync.targets.ldap_client import Attributes, Change
from jmlsync.targets.ldap_settings import LdapEntryTemplate

DisableMode = Literal["ppolicy", "389ds", "ad", "none"]

PERMANENT_LOCK = "000001010000Z"
ACCOUNTDISABLE = 0x2
#: userAccountControl of an enabled user account (NORMAL_ACCOUNT), when none could be read.
NORMAL_ACCOUNT = 0x200

#: The attributes of a user's entry each variant reads ("1.1": none).
DISABLE_ATTRIBUTES: dict[DisableMode, list[str]] = {
    "ppolicy": ["pwdAccountLockedTime"],
    "389ds": ["nsAccountLock"],
    "ad": ["userAccountControl"],
    "none": ["1.1"],
}

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def _values(attributes: Attributes, name: str) -> list[str]:
    return attributes.get(name.lower(), [])


def _account_control(attributes: Attributes) -> int:
    values = _values(attributes, "userAccountControl")
    try:
        return int(values[0]) if values else NORMAL_ACCOUNT
    except ValueError:
        raise PermanentTargetError(f"userAccountControl {values[0]!r} is not a number") from None


def is_disabled(mode: DisableMode, attributes: Attributes) -> bool:
    """Whether the entry's attributes (those ``mode`` reads) show it disabled by ``mode``."""
    if mode == "ppolicy":
        return PERMANENT_LOCK in _values(attributes, "pwdAccountLockedTime")
    if mode == "389ds":
        return any(v.upper() == "TRUE" for v in _values(attributes, "nsAccountLock"))
    if mode == "ad":
        return bool(_account_control(attributes) & ACCOUNTDISABLE)
    return False


def disable_changes(mode: DisableMode, attributes: Attributes) -> list[Change]:
    """The one modification that disables the account ``attributes`` describe."""
    if mode == "ppolicy":
        return [Change("replace", "pwdAccountLockedTime", (PERMANENT_LOCK,))]
    if mode == "389ds":
        return [Change("replace", "nsAccountLock", ("TRUE",))]
    if mode == "ad":
        value = _account_control(attributes) | ACCOUNTDISABLE
        return [Change("replace", "userAccountControl", (str(value),))]
    return []


def enable_changes(mode: DisableMode, attributes: Attributes) -> list[Change]:
    """The one modification that undoes ``disable_changes``."""
    if mode == "ppolicy":
        return [Change("delete", "pwdAccountLockedTime")]
    if mode == "389ds":
        return [Change("delete", "nsAccountLock")]
    if mode == "ad":
        value = _account_control(attributes) & ~ACCOUNTDISABLE
        return [Change("replace", "userAccountControl", (str(value),))]
    return []


def _fields(spec: PrincipalSpec) -> dict[str, str | None]:
    return {
        "userName": spec.user,
        "local": spec.user.rpartition("@")[0] or spec.user,
        "displayName": spec.display_name,
        "givenName": spec.given_name,
        "familyName": spec.family_name,
        "email": spec.email,
        "externalId": spec.external_id,
    }


def render(template: str, spec: PrincipalSpec) -> str | None:
    """``template`` with each ``{a|b}`` replaced by the first of the user's fields that is set;
    None when one of them has none."""
    fields = _fields(spec)
    missing = False

    def value(match: re.Match[str]) -> str:
        nonlocal missing
        for name in match.group(1).split("|"):
            found = fields.get(name)
            if found:
                return found
        missing = True
        return ""

    rendered = _PLACEHOLDER.sub(value, template)
    return None if missing or not rendered else rendered


def new_entry(template: LdapEntryTemplate, spec: PrincipalSpec) -> dict[str, list[str]]:
    """The attributes of a provisioned user's entry, ``objectClass`` included."""
    attributes: dict[str, list[str]] = {"objectClass": list(template.object_classes)}
    for name, pattern in template.attributes.items():
        rendered = render(pattern, spec)
        if rendered is not None:
            attributes[name] = [rendered]
    if template.rdn_attribute not in attributes:
        raise PermanentTargetError(
            f"cannot name an entry for {spec.user!r}: the user has no value for"
            f" {template.rdn_attribute} ({template.attributes[template.rdn_attribute]})"
        )
    return attributes
