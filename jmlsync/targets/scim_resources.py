"""The SCIM representations the SCIM connector writes and reads: users and group members."""

from __future__ import annotations

from jmlsync.domain.access import PrincipalSpec
from jmlsync.targets.scim_http import Json

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"


def is_active(user: Json) -> bool:
    """Whether a SCIM user may sign in."""
    # RFC 7643 leaves ``active`` optional; a user without it can sign in.
    return user.get("active") is not False


def user_members(group: Json) -> set[str]:
    """The ids of the users a SCIM group lists as members (nested groups left out)."""
    members = group.get("members") or []
    return {
        str(m["value"])
        for m in members
        if isinstance(m, dict) and "value" in m and m.get("type", "User") == "User"
    }


def new_user(spec: PrincipalSpec) -> Json:
    """The SCIM user to create for ``spec``, with what IAM Identity Center requires."""
    user: Json = {
        "schemas": [USER_SCHEMA],
        "userName": spec.user,
        # The id upstream is not ours to know; the userName is what both sides agree on.
        "externalId": spec.user,
        "name": {
            "givenName": spec.given_name or spec.user,
            "familyName": spec.family_name or spec.user,
        },
        "displayName": spec.display_name or spec.user,
        "active": True,
    }
    if spec.email:
        user["emails"] = [{"value": spec.email, "type": "work", "primary": True}]
    return user
