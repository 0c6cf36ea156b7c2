"""``kind = "ldap"`` of the configuration: an LDAP directory or Active Directory whose groups are
the roles. A leaf module, like config.py."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from jmlsync.targets.settings import TargetSection

#: The placeholders a ``user_filter`` may use: the userName, or its part before the last ``@``.
FILTER_PLACEHOLDERS = frozenset({"userName", "local"})
#: The SCIM user's fields an entry template may name (``{displayName|userName}``: the first set).
TEMPLATE_FIELDS = frozenset(
    {"userName", "local", "displayName", "givenName", "familyName", "email", "externalId"}
)
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_ATTRIBUTE = r"^[A-Za-z][A-Za-z0-9-]{0,63}$"
_SIMPLE_FILTER = re.compile(r"^\(([A-Za-z][A-Za-z0-9-]*)=\{userName\}\)$")

#: The membership attribute each well-known group object class keeps its members in.
MEMBER_ATTRIBUTES = {
    "groupOfNames": "member",
    "groupOfUniqueNames": "uniqueMember",
    "posixGroup": "memberUid",
    "group": "member",
}


class _LdapSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _placeholders(template: str) -> list[list[str]]:
    return [part.split("|") for part in _PLACEHOLDER.findall(template)]


class LdapEntryTemplate(_LdapSection):
    """``[targets.NAME.user_template]``: how ``provision_users`` builds a missing user's entry.

    Each attribute's value is a template over the SCIM user: ``{email}``, or ``{a|b}`` for the
    first of the two that is set; an attribute whose template has no value set is left out.
    """

    object_classes: Annotated[list[str], Field(min_length=1)] = ["inetOrgPerson"]
    rdn_attribute: Annotated[str, Field(pattern=_ATTRIBUTE)] = "uid"
    attributes: dict[str, str] = {
        "uid": "{userName}",
        "cn": "{displayName|userName}",
        "sn": "{familyName|userName}",
        "givenName": "{givenName}",
        "displayName": "{displayName}",
        "mail": "{email}",
    }

    @field_validator("attributes")
    @classmethod
    def _known_fields(cls, value: dict[str, str]) -> dict[str, str]:
        for attribute, template in value.items():
            if not re.match(_ATTRIBUTE, attribute):
                raise ValueError(f"{attribute!r} is not an attribute name")
            unknown = {f for names in _placeholders(template) for f in names} - TEMPLATE_FIELDS
            if unknown:
                raise ValueError(
                    f"{attribute}: unknown field {sorted(unknown)[0]!r}"
                    f" (known: {', '.join(sorted(TEMPLATE_FIELDS))})"
                )
        return value

    @model_validator(mode="after")
    def _rdn_is_mapped(self) -> LdapEntryTemplate:
        if self.rdn_attribute not in self.attributes:
            raise ValueError(f"rdn_attribute {self.rdn_attribute!r} has no template in attributes")
        return self


class LdapTargetSettings(TargetSection):
    """``kind = "ldap"``: groups of an LDAP directory (OpenLDAP, 389-ds, Active Directory).

    The bind password is read from ``bind_password_file``, never from this file.
    """

    kind: Literal["ldap"]
    url: Annotated[str, Field(pattern=r"^ldaps?://[^/?#]+/?$")]
    start_tls: bool = True
    ca_file: Path | None = None
    bind_dn: Annotated[str, Field(min_length=1)]
    bind_password_file: Path
    connect_timeout_seconds: Annotated[float, Field(gt=0)] = 5.0
    timeout_seconds: Annotated[float, Field(gt=0)] = 30.0
    pool_size: Annotated[int, Field(ge=1, le=32)] = 4
    page_size: Annotated[int, Field(ge=1, le=10000)] = 500
    users_base: Annotated[str, Field(min_length=1)]
    user_filter: Annotated[str, Field(min_length=3)] = "(uid={userName})"
    user_name_attribute: Annotated[str, Field(pattern=_ATTRIBUTE)] | None = None
    users_filter: Annotated[str, Field(min_length=3)] = "(objectClass=*)"
    provision_users: bool = False
    user_template: LdapEntryTemplate = LdapEntryTemplate()
    groups_base: Annotated[str, Field(min_length=1)]
    group_object_class: Annotated[str, Field(pattern=_ATTRIBUTE)] = "groupOfNames"
    member_attribute: Literal["member", "uniqueMember", "memberUid"] | None = None
    member_uid_attribute: Annotated[str, Field(pattern=_ATTRIBUTE)] = "uid"
    disable: Literal["ppolicy", "389ds", "ad", "none"] = "none"

    @field_validator("user_filter", "users_filter")
    @classmethod
    def _filter_shape(cls, value: str) -> str:
        if not (value.startswith("(") and value.endswith(")")) or value.count("(") != value.count(
            ")"
        ):
            raise ValueError(f"{value!r} is not a parenthesised LDAP filter")
        return value

    @field_validator("user_filter")
    @classmethod
    def _names_the_user(cls, value: str) -> str:
        names = [names for names in _placeholders(value)]
        if not names or any(len(n) != 1 or n[0] not in FILTER_PLACEHOLDERS for n in names):
            raise ValueError("expected placeholders {userName} or {local} only, at least one")
        return value

    @model_validator(mode="after")
    def _derived_names(self) -> LdapTargetSettings:
        if self.user_name_attribute is None and not _SIMPLE_FILTER.match(self.user_filter):
            raise ValueError(
                "user_name_attribute is required unless user_filter is (ATTRIBUTE={userName})"
            )
        if self.member_attribute is None and self.group_object_class not in MEMBER_ATTRIBUTES:
            raise ValueError(
                f"member_attribute is required for group_object_class {self.group_object_class!r}"
            )
        return self

    @property
    def name_attribute(self) -> str:
        """The attribute of a user's entry that holds its userName."""
        if self.user_name_attribute is not None:
            return self.user_name_attribute
        found = _SIMPLE_FILTER.match(self.user_filter)
        assert found is not None
        return found.group(1)

    @property
    def membership_attribute(self) -> str:
        """The attribute of a group's entry that lists its members."""
        return self.member_attribute or MEMBER_ATTRIBUTES[self.group_object_class]
