"""AWS IAM: IAM users, their group memberships and their directly attached managed policies.

A role is an IAM group name (the user is a member), or ``policy:ARN`` for a managed policy
attached directly to the user.

Names. The principal of the userName ``U`` is the IAM user named :func:`iam_user_name` ``(U)``:

- ``U`` itself when IAM accepts it: ASCII letters, digits and ``_+=,.@-``, at most 64 characters;
- otherwise ``U`` with every other character replaced by ``-``, cut to 55 characters, then ``-``
  and the first 8 hex digits of the SHA-256 of ``U`` (UTF-8): ``Zoë O'Neil`` becomes
  ``Zo--O-Neil-`` and 8 hex digits. The digest is added whenever the name had to change, not
  only when it is long, so ``o'neil`` and ``o-neil`` never share one IAM user.

Every user jmlsync creates (or adopts: an IAM user made by hand under the mapped name) carries
the tag ``jmlsync:userName`` holding ``U`` (``b64:`` and its base64 when ``U`` has characters
IAM tag values refuse); listings report ``U`` through it, and an untagged user under its IAM
name. An IAM user whose tag names another userName is refused as a collision.

Leavers. :meth:`IamTarget.disable_principal` deletes the console password (login profile),
deactivates every access key, SSH public key and signing certificate, then tags the user
``jmlsync:disabled=true``: ``principal().enabled`` is the absence of that tag. Ensuring a
disabled principal removes the tag and never re-activates a credential: its owner must have new
ones issued. With ``delete_users_on_leave`` the user is deleted instead, after what IAM
requires gone first (credentials, MFA devices, inline and attached policies, memberships).
Service-specific credentials (CodeCommit Git, Keyspaces, Bedrock API keys) are not handled.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from jmlsync.domain.access import Grant, Principal, PrincipalSpec
from jmlsync.domain.errors import PermanentTargetError, TransientTargetError
from jmlsync.targets.aws_common import AwsClients, KeyedLocks, gather_limited
from jmlsync.targets.aws_settings import AwsIamTargetSettings

IAM = "iam"
NO_SUCH_ENTITY = frozenset({"NoSuchEntity"})
USER_NAME_TAG = "jmlsync:userName"
DISABLED_TAG = "jmlsync:disabled"
POLICY_PREFIX = "policy:"
ENCODED_PREFIX = "b64:"
MAX_NAME = 64
MAX_TAG_VALUE = 256
#: Users listed and read at once; ListUsers pages hold 100.
BATCH = 100

_UNSAFE = re.compile(r"[^A-Za-z0-9_+=,.@-]")
_GROUP = re.compile(r"[\w+=,.@-]{1,128}", re.ASCII)
_POLICY_ARN = re.compile(r"arn:aws[a-z-]*:iam::(aws|\d{12}):policy/\S+")
_TAG_SAFE = re.compile(r"[A-Za-z0-9 _.:/=+@-]*")


def iam_user_name(user: str) -> str:
    """The IAM user name of the userName ``user`` (see the module's documentation)."""
    safe = _UNSAFE.sub("-", user)
    if safe == user and 0 < len(user) <= MAX_NAME:
        return user
    digest = hashlib.sha256(user.encode()).hexdigest()[:8]
    return f"{safe[: MAX_NAME - 9]}-{digest}"


def tag_value(user: str) -> str:
    """``user`` as an IAM tag value, which allows fewer characters than a userName."""
    if _TAG_SAFE.fullmatch(user) and not user.startswith(ENCODED_PREFIX):
        value = user
    else:
        value = ENCODED_PREFIX + base64.b64encode(user.encode()).decode()
    if len(value) > MAX_TAG_VALUE:
        raise PermanentTargetError(f"userName {user[:40]!r}... is too long to tag an IAM user")
    return value


def user_from_tag(value: str) -> str:
    """The userName a ``jmlsync:userName`` tag value holds."""
    if value.startswith(ENCODED_PREFIX):
        return base64.b64decode(value.removeprefix(ENCODED_PREFIX)).decode()
    return value


def parse_role(role: str) -> tuple[Literal["group", "policy"], str]:
    """``("group", name)`` or ``("policy", arn)``; PermanentTargetError when malformed."""
    if role.startswith(POLICY_PREFIX):
        arn = role.removeprefix(POLICY_PREFIX)
        if not _POLICY_ARN.fullmatch(arn):
            raise PermanentTargetError(f"role {role!r}: {arn!r} is not an IAM policy ARN")
        return "policy", arn
    if not _GROUP.fullmatch(role):
        raise PermanentTargetError(
            f"role {role!r} is neither an IAM group name nor 'policy:' and a policy ARN"
        )
    return "group", role


def _tags(items: list[Any] | None) -> dict[str, str]:
    return {str(t["Key"]): str(t["Value"]) for t in items or ()}


@dataclass(frozen=True)
class _IamUser:
    name: str
    user: str
    disabled: bool
    tagged: bool


class IamTarget:
    """The Target port on the IAM users, groups and managed policies of one account."""

    kind = "aws-iam"

    def __init__(self, name: str, settings: AwsIamTargetSettings, clients: AwsClients) -> None:
        self.name = name
        self._settings = settings
        self._clients = clients
        self._locks = KeyedLocks()

    @classmethod
    async def open(
        cls, name: str, settings: AwsIamTargetSettings, *, page_size: int | None = None
    ) -> IamTarget:
        """Open the IAM client; ``page_size`` overrides IAM's page sizes (tests make them
        small)."""
        clients = await AwsClients.open(
            (IAM,),
            region=settings.region,
            endpoint_url=settings.endpoint_url,
            max_pool_connections=max(10, settings.max_concurrency),
            page_size=page_size,
        )
        return cls(name, settings, clients)

    async def close(self) -> None:
        await self._clients.close()

    async def ping(self) -> None:
        await self._call("list_users", PathPrefix=self._settings.user_path, MaxItems=1)

    async def list_grants(self) -> AsyncIterator[Grant]:
        async for batch in self._user_batches():
            held = await gather_limited(
                [partial(self._grants, user) for user in batch], self._settings.max_concurrency
            )
            for grants in held:
                for grant in grants:
                    yield grant

    async def list_principals(self) -> AsyncIterator[Principal]:
        async for batch in self._user_batches():
            found = await gather_limited(
                [partial(self._read, user) for user in batch], self._settings.max_concurrency
            )
            for iam_user in found:
                if iam_user is not None:
                    yield Principal(iam_user.user, enabled=not iam_user.disabled)

    async def grants_of(self, user: str) -> frozenset[str]:
        found = await self._lookup(user)
        roles = await self._roles(found.name) if found is not None else None
        return roles or frozenset()

    async def principal(self, user: str) -> Principal | None:
        found = await self._lookup(user)
        return Principal(user, enabled=not found.disabled) if found is not None else None

    async def ensure_principal(self, spec: PrincipalSpec) -> None:
        async with self._locks.hold(iam_user_name(spec.user)):
            found = await self._lookup(spec.user)
            if found is None:
                if await self._create(spec.user):
                    return  # created enabled, with its tag
                found = await self._lookup(spec.user)  # created meanwhile, elsewhere
            if found is None:
                raise TransientTargetError(f"{self.name}: IAM user of {spec.user!r} came and went")
            if found.disabled:
                await self._call("untag_user", UserName=found.name, TagKeys=[DISABLED_TAG])
            if not found.tagged:
                await self._tag(found.name, USER_NAME_TAG, tag_value(spec.user))

    async def grant(self, user: str, role: str) -> None:
        kind, value = parse_role(role)
        async with self._locks.hold(iam_user_name(user)):
            found = await self._lookup(user)
            roles = await self._roles(found.name, only=kind) if found is not None else None
            if found is None or roles is None:
                raise PermanentTargetError(f"{self.name}: no IAM user for {user!r}")
            if role in roles:
                return
            if kind == "group":
                await self._call("add_user_to_group", GroupName=value, UserName=found.name)
            else:
                await self._call("attach_user_policy", PolicyArn=value, UserName=found.name)

    async def revoke(self, user: str, role: str) -> None:
        kind, value = parse_role(role)
        async with self._locks.hold(iam_user_name(user)):
            found = await self._lookup(user)
            roles = await self._roles(found.name, only=kind) if found is not None else None
            if found is None or roles is None or role not in roles:
                return
            if kind == "group":
                await self._gone("remove_user_from_group", GroupName=value, UserName=found.name)
            else:
                await self._gone("detach_user_policy", PolicyArn=value, UserName=found.name)

    async def disable_principal(self, user: str) -> None:
        async with self._locks.hold(iam_user_name(user)):
            found = await self._lookup(user)
            if found is None:
                return
            if self._settings.delete_users_on_leave:
                await self._delete(found.name)
                return
            await self._disable_credentials(found.name)
            # Tagged last: a disable cut short is redone whole, since the user still reads
            # as enabled.
            if not found.disabled:
                await self._tag(found.name, DISABLED_TAG, "true")

    async def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        return await self._clients.call(IAM, operation, **params)

    async def _gone(self, operation: str, **params: Any) -> None:
        """Remove something; already removed (NoSuchEntity) is a success."""
        await self._clients.call_or_none(IAM, operation, absent=NO_SUCH_ENTITY, **params)

    async def _tag(self, name: str, key: str, value: str) -> None:
        await self._call("tag_user", UserName=name, Tags=[{"Key": key, "Value": value}])

    async def _listed(self, operation: str, key: str, name: str) -> list[Any] | None:
        """What a per-user listing holds; None when the user is gone.

        One call is enough almost always (IAM caps a user at 10 groups and 20 attached
        policies, pages hold 100); the paginator takes over when the answer is truncated.
        """
        size = {"MaxItems": self._clients.page_size} if self._clients.page_size else {}
        first = await self._clients.call_or_none(
            IAM, operation, absent=NO_SUCH_ENTITY, UserName=name, **size
        )
        if first is None:
            return None
        if not first.get("IsTruncated"):
            return list(first.get(key) or ())
        return await self._clients.all_items(IAM, operation, key, UserName=name)

    def _as_iam_user(self, name: str, user: str, tags: dict[str, str]) -> _IamUser:
        owner = user_from_tag(tags[USER_NAME_TAG]) if USER_NAME_TAG in tags else None
        disabled = tags.get(DISABLED_TAG) == "true"
        return _IamUser(name, owner or user, disabled, tagged=owner is not None)

    async def _lookup(self, user: str) -> _IamUser | None:
        """The IAM user of ``user``; PermanentTargetError when it belongs to another userName."""
        found = await self._clients.call_or_none(
            IAM, "get_user", absent=NO_SUCH_ENTITY, UserName=iam_user_name(user)
        )
        if found is None:
            return None
        name = str(found["User"]["UserName"])
        iam_user = self._as_iam_user(name, user, _tags(found["User"].get("Tags")))
        if iam_user.user != user:
            raise PermanentTargetError(
                f"{self.name}: IAM user {name!r} belongs to userName {iam_user.user!r},"
                f" not {user!r}"
            )
        return iam_user

    async def _create(self, user: str) -> bool:
        """Create the IAM user of ``user``; False when it already exists."""
        if not self._settings.provision_users:
            raise PermanentTargetError(
                f"{self.name}: no IAM user for {user!r} (provision_users is off)"
            )
        created = await self._clients.call_or_none(
            IAM,
            "create_user",
            absent={"EntityAlreadyExists"},
            UserName=iam_user_name(user),
            Path=self._settings.user_path,
            Tags=[{"Key": USER_NAME_TAG, "Value": tag_value(user)}],
        )
        return created is not None

    async def _read(self, listed: dict[str, Any]) -> _IamUser | None:
        # ListUsers omits tags: they are read per user.
        name = str(listed["UserName"])
        tags = await self._listed("list_user_tags", "Tags", name)
        return self._as_iam_user(name, name, _tags(tags)) if tags is not None else None

    async def _grants(self, listed: dict[str, Any]) -> list[Grant]:
        iam_user = await self._read(listed)
        if iam_user is None:
            return []  # deleted since it was listed
        roles = await self._roles(iam_user.name) or frozenset()
        return [Grant(self.name, iam_user.user, role) for role in sorted(roles)]

    async def _roles(
        self, name: str, *, only: Literal["group", "policy"] | None = None
    ) -> frozenset[str] | None:
        """The roles of the IAM user ``name`` (those of one kind, when ``only``); None when
        the user is gone."""
        groups: list[Any] | None = []
        policies: list[Any] | None = []
        if only != "policy":
            groups = await self._listed("list_groups_for_user", "Groups", name)
        if only != "group":
            policies = await self._listed("list_attached_user_policies", "AttachedPolicies", name)
        if groups is None or policies is None:
            return None
        return frozenset(
            {str(g["GroupName"]) for g in groups}
            | {POLICY_PREFIX + str(p["PolicyArn"]) for p in policies}
        )

    async def _user_batches(self) -> AsyncIterator[list[dict[str, Any]]]:
        batch: list[dict[str, Any]] = []
        async for listed in self._clients.items(
            IAM, "list_users", "Users", PathPrefix=self._settings.user_path
        ):
            batch.append(listed)
            if len(batch) == BATCH:
                yield batch
                batch = []
        if batch:
            yield batch

    async def _disable_credentials(self, name: str) -> None:
        await self._gone("delete_login_profile", UserName=name)
        for key in await self._listed("list_access_keys", "AccessKeyMetadata", name) or ():
            if key.get("Status") == "Active":
                await self._call(
                    "update_access_key",
                    UserName=name,
                    AccessKeyId=key["AccessKeyId"],
                    Status="Inactive",
                )
        for ssh in await self._listed("list_ssh_public_keys", "SSHPublicKeys", name) or ():
            if ssh.get("Status") == "Active":
                await self._call(
                    "update_ssh_public_key",
                    UserName=name,
                    SSHPublicKeyId=ssh["SSHPublicKeyId"],
                    Status="Inactive",
                )
        for cert in await self._listed("list_signing_certificates", "Certificates", name) or ():
            if cert.get("Status") == "Active":
                await self._call(
                    "update_signing_certificate",
                    UserName=name,
                    CertificateId=cert["CertificateId"],
                    Status="Inactive",
                )

    async def _delete(self, name: str) -> None:
        """Delete the IAM user, removing first everything IAM refuses to delete a user with."""
        await self._gone("delete_login_profile", UserName=name)
        for key in await self._listed("list_access_keys", "AccessKeyMetadata", name) or ():
            await self._gone("delete_access_key", UserName=name, AccessKeyId=key["AccessKeyId"])
        for ssh in await self._listed("list_ssh_public_keys", "SSHPublicKeys", name) or ():
            await self._gone(
                "delete_ssh_public_key", UserName=name, SSHPublicKeyId=ssh["SSHPublicKeyId"]
            )
        for cert in await self._listed("list_signing_certificates", "Certificates", name) or ():
            await self._gone(
                "delete_signing_certificate", UserName=name, CertificateId=cert["CertificateId"]
            )
        for mfa in await self._listed("list_mfa_devices", "MFADevices", name) or ():
            serial = str(mfa["SerialNumber"])
            await self._gone("deactivate_mfa_device", UserName=name, SerialNumber=serial)
            if ":mfa/" in serial:  # a virtual device (an ARN); hardware ones have no ARN
                await self._gone("delete_virtual_mfa_device", SerialNumber=serial)
        for policy in await self._listed("list_user_policies", "PolicyNames", name) or ():
            await self._gone("delete_user_policy", UserName=name, PolicyName=policy)
        for attached in (
            await self._listed("list_attached_user_policies", "AttachedPolicies", name) or ()
        ):
            await self._gone("detach_user_policy", UserName=name, PolicyArn=attached["PolicyArn"])
        for group in await self._listed("list_groups_for_user", "Groups", name) or ():
            await self._gone("remove_user_from_group", UserName=name, GroupName=group["GroupName"])
        await self._gone("delete_user", UserName=name)
