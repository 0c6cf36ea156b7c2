"""AWS IAM Identity Center: permission sets assigned to Identity Store users on accounts.

A role is ``ACCOUNT_ID/PERMISSION_SET_NAME``; a grant is an account assignment of that permission
set on that account to the user (PrincipalType USER). Principals are Identity Store users matched
by userName. Assignments to groups of the Identity Store are neither read nor written.

Identity Center has no API to disable a user. A leaver's access ends when its last assignment is
revoked, which the engine does before it disables: principals report ``can_disable=False`` and
:meth:`IdentityCenterTarget.disable_principal` changes nothing, unless ``delete_users_on_leave``
is set, when it deletes the Identity Store user instead.

Within one pipeline job (:data:`jmlsync.ports.JOB_READS`) the user's id and the assignments the
job's read listed serve the writes planned from that read: a leaver's revocation is then one
``DeleteAccountAssignment``, not a second ``GetUserId`` and listing first. A failed write forgets
them, so its retry looks again.

AWS creates and deletes assignments asynchronously: every write is followed to SUCCEEDED (see
:func:`jmlsync.targets.aws_common.follow_request`), so a grant that returned is in force.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from jmlsync.domain.access import Grant, Principal, PrincipalSpec
from jmlsync.domain.errors import PermanentTargetError, TargetError, TransientTargetError
from jmlsync.ports import JOB_READS
from jmlsync.targets.aws_common import (
    AwsClients,
    KeyedLocks,
    Response,
    follow_request,
    gather_limited,
)
from jmlsync.targets.aws_settings import AwsIdentityCenterTargetSettings

SSO = "sso-admin"
IDENTITY_STORE = "identitystore"
NOT_FOUND = frozenset({"ResourceNotFoundException"})

_ROLE = re.compile(r"(?P<account>\d{12})/(?P<name>[\w+=,.@-]{1,32})", re.ASCII)


def parse_role(role: str) -> tuple[str, str]:
    """``(account id, permission set name)`` of a role; PermanentTargetError when malformed."""
    match = _ROLE.fullmatch(role)
    if match is None:
        raise PermanentTargetError(
            f"role {role!r} is not ACCOUNT_ID/PERMISSION_SET_NAME"
            " (a 12-digit account id, '/', a permission set name)"
        )
    return match["account"], match["name"]


def identity_store_user(spec: PrincipalSpec) -> dict[str, Any]:
    """The CreateUser fields for ``spec``: the Identity Store requires a display name, a given
    name and a family name, so what the IdP did not send falls back on the userName."""
    local = spec.user.partition("@")[0] or spec.user
    named = " ".join(n for n in (spec.given_name, spec.family_name) if n)
    fields: dict[str, Any] = {
        "UserName": spec.user,
        "DisplayName": spec.display_name or named or spec.user,
        "Name": {"GivenName": spec.given_name or local, "FamilyName": spec.family_name or local},
    }
    if spec.email:
        fields["Emails"] = [{"Value": spec.email, "Type": "work", "Primary": True}]
    return fields


@dataclass(frozen=True)
class _Instance:
    arn: str
    identity_store_id: str


class _PermissionSets:
    """Permission set names and ARNs, read once and refreshed when a name or ARN is unknown.

    Names are immutable in Identity Center, so an ARN's name never goes stale; each listing of
    every grant rebuilds the map, dropping deleted permission sets.
    """

    def __init__(self, clients: AwsClients, limit: int) -> None:
        self._clients = clients
        self._limit = limit
        self._by_name: dict[str, str] = {}
        self._by_arn: dict[str, str] = {}
        self._lock = asyncio.Lock()
        self._begun = 0  # refreshes begun
        self._done = 0  # the number of the last refresh that completed

    async def arn(self, instance: str, name: str) -> str | None:
        if name not in self._by_name:
            await self._refresh(instance)
        return self._by_name.get(name)

    async def name(self, instance: str, arn: str) -> str | None:
        if arn not in self._by_arn:
            await self._refresh(instance)
        return self._by_arn.get(arn)

    async def every(self, instance: str) -> dict[str, str]:
        """Every permission set, read now: ARN to name."""
        await self._refresh(instance)
        return dict(self._by_arn)

    async def _refresh(self, instance: str) -> None:
        asked = self._begun
        async with self._lock:
            if self._done > asked:
                return  # one begun after this caller asked completed while it waited
            self._begun += 1
            number = self._begun
            arns = await self._clients.all_items(
                SSO, "list_permission_sets", "PermissionSets", InstanceArn=instance
            )
            unknown = [arn for arn in arns if arn not in self._by_arn]
            describe = [partial(self._describe, instance, arn) for arn in unknown]
            # Every describe runs to its end: what one learnt stays cached when another fails.
            await gather_limited(describe, self._limit, settle=True)
            self._by_arn = {arn: self._by_arn[arn] for arn in arns if arn in self._by_arn}
            self._by_name = {name: arn for arn, name in self._by_arn.items()}
            self._done = number

    async def _describe(self, instance: str, arn: str) -> None:
        # Cached one by one, so a refresh cut short by throttling keeps what it learnt.
        found = await self._clients.call(
            SSO, "describe_permission_set", InstanceArn=instance, PermissionSetArn=arn
        )
        self._by_arn[arn] = str(found["PermissionSet"]["Name"])


class IdentityCenterTarget:
    """The Target port on one IAM Identity Center instance and its Identity Store."""

    kind = "aws-identity-center"

    def __init__(
        self, name: str, settings: AwsIdentityCenterTargetSettings, clients: AwsClients
    ) -> None:
        self.name = name
        self._settings = settings
        self._clients = clients
        self._limit = settings.max_concurrency
        self._permission_sets = _PermissionSets(clients, self._limit)
        self._locks = KeyedLocks()
        self._found: _Instance | None = None
        self._discovery = asyncio.Lock()

    @classmethod
    async def open(
        cls, name: str, settings: AwsIdentityCenterTargetSettings, *, page_size: int | None = None
    ) -> IdentityCenterTarget:
        """Open the clients; the instance is discovered at the first call, under retries.

        ``page_size`` overrides AWS's page sizes (tests make pages small).
        """
        clients = await AwsClients.open(
            (SSO, IDENTITY_STORE),
            region=settings.region,
            endpoint_url=settings.endpoint_url,
            max_pool_connections=max(10, settings.max_concurrency),
            # Identity Center refuses an operation while another runs on the same permission
            # set: it answers ConflictException, which clears up.
            transient_codes={SSO: {"ConflictException"}},
            page_size=page_size,
        )
        return cls(name, settings, clients)

    async def close(self) -> None:
        await self._clients.close()

    async def ping(self) -> None:
        # The instance's discovery (one call, when not configured), then one user at most.
        instance = await self._instance()
        await self._clients.call(
            IDENTITY_STORE,
            "list_users",
            IdentityStoreId=instance.identity_store_id,
            MaxResults=1,
        )

    async def list_grants(self) -> AsyncIterator[Grant]:
        instance = await self._instance()
        user_names: dict[str, str | None] = {}
        for arn, name in (await self._permission_sets.every(instance.arn)).items():
            async for account in self._clients.items(
                SSO,
                "list_accounts_for_provisioned_permission_set",
                "AccountIds",
                InstanceArn=instance.arn,
                PermissionSetArn=arn,
            ):
                async for assignment in self._clients.items(
                    SSO,
                    "list_account_assignments",
                    "AccountAssignments",
                    InstanceArn=instance.arn,
                    AccountId=account,
                    PermissionSetArn=arn,
                ):
                    if assignment.get("PrincipalType") != "USER":
                        continue
                    user = await self._user_name(instance, assignment["PrincipalId"], user_names)
                    if user is not None:
                        yield Grant(self.name, user, f"{account}/{name}")

    async def list_principals(self) -> AsyncIterator[Principal]:
        instance = await self._instance()
        async for user in self._clients.items(
            IDENTITY_STORE, "list_users", "Users", IdentityStoreId=instance.identity_store_id
        ):
            yield self._principal(str(user["UserName"]))

    async def grants_of(self, user: str) -> frozenset[str]:
        instance = await self._instance()
        user_id = await self._user_id(instance, user)
        if user_id is None:
            return frozenset()
        return await self._roles_of(instance, user_id)

    async def read_user(self, user: str) -> tuple[frozenset[str], Principal | None]:
        """``grants_of`` and ``principal`` from one lookup of the user's id: a leaver the
        Identity Store does not hold costs one call, not two."""
        instance = await self._instance()
        user_id = await self._user_id(instance, user)
        if user_id is None:
            return frozenset(), None
        return await self._roles_of(instance, user_id), self._principal(user)

    async def _roles_of(self, instance: _Instance, user_id: str) -> frozenset[str]:
        roles, held = set(), set()
        async for account, arn in self._assignments(instance, user_id):
            held.add((account, arn))
            name = await self._permission_sets.name(instance.arn, arn)
            if name is not None:
                roles.add(f"{account}/{name}")
        self._remember(("held", user_id), frozenset(held))
        return frozenset(roles)

    async def principal(self, user: str) -> Principal | None:
        instance = await self._instance()
        found = await self._user_id(instance, user)
        return self._principal(user) if found is not None else None

    async def ensure_principal(self, spec: PrincipalSpec) -> None:
        instance = await self._instance()
        async with self._locks.hold(spec.user):
            if await self._user_id(instance, spec.user) is not None:
                return
            if not self._settings.provision_users:
                raise PermanentTargetError(
                    f"{self.name}: user {spec.user!r} not found in the Identity Store"
                    " (provision_users is off)"
                )
            created = await self._clients.call_or_none(
                IDENTITY_STORE,
                "create_user",
                absent={"ConflictException"},
                IdentityStoreId=instance.identity_store_id,
                **identity_store_user(spec),
            )
            # A conflict is a user created meanwhile (then found now) or a concurrent change.
            if created is None and await self._user_id(instance, spec.user) is None:
                raise TransientTargetError(f"{self.name}: creating {spec.user!r} conflicted")
            if created is not None and created.get("UserId"):
                # A user just created holds no assignment yet.
                self._remember(("id", spec.user), str(created["UserId"]))
                self._remember(("held", str(created["UserId"])), frozenset())

    async def grant(self, user: str, role: str) -> None:
        instance, account, arn = await self._resolve(role)
        if arn is None:
            raise PermanentTargetError(
                f"{self.name}: no permission set named {parse_role(role)[1]!r} (role {role!r})"
            )
        async with self._locks.hold(user):
            with self._forgetting(user):
                user_id = await self._user_id(instance, user)
                if user_id is None:
                    raise PermanentTargetError(f"{self.name}: no Identity Store user {user!r}")
                if not await self._holds(instance, user_id, account, arn):
                    await self._assign(instance, "create", account, arn, user_id, f"grant {role}")
                    self._held_now(user_id, account, arn, held=True)

    async def revoke(self, user: str, role: str) -> None:
        instance, account, arn = await self._resolve(role)
        if arn is None:
            return  # no such permission set: nobody can hold it
        async with self._locks.hold(user):
            with self._forgetting(user):
                user_id = await self._user_id(instance, user)
                if user_id is not None and await self._holds(instance, user_id, account, arn):
                    await self._assign(instance, "delete", account, arn, user_id, f"revoke {role}")
                    self._held_now(user_id, account, arn, held=False)

    async def disable_principal(self, user: str) -> None:
        if not self._settings.delete_users_on_leave:
            return  # no disabling in Identity Center: the revocations ended the access
        instance = await self._instance()
        async with self._locks.hold(user):
            with self._forgetting(user):
                user_id = await self._user_id(instance, user)
                if user_id is not None:
                    await self._clients.call_or_none(
                        IDENTITY_STORE,
                        "delete_user",
                        absent=NOT_FOUND,
                        IdentityStoreId=instance.identity_store_id,
                        UserId=user_id,
                    )
                    self._forget(user)

    def _remember(self, key: tuple[str, str], value: object) -> None:
        """Keep what a read found for the rest of this job (no-op outside one)."""
        memo = JOB_READS.get()
        if memo is not None:
            memo[(self.name, *key)] = value

    def _recall(self, key: tuple[str, str]) -> object:
        memo = JOB_READS.get()
        return None if memo is None else memo.get((self.name, *key))

    def _forget(self, user: str) -> None:
        memo = JOB_READS.get()
        if memo is not None:
            user_id = memo.pop((self.name, "id", user), None)
            memo.pop((self.name, "held", user_id), None)

    @contextlib.contextmanager
    def _forgetting(self, user: str) -> Iterator[None]:
        """A write that fails forgets what the job read of ``user``: its retry looks again."""
        try:
            yield
        except TargetError:
            self._forget(user)
            raise

    def _held_now(self, user_id: str, account: str, arn: str, *, held: bool) -> None:
        known = self._recall(("held", user_id))
        if isinstance(known, frozenset):
            pair = frozenset({(account, arn)})
            self._remember(("held", user_id), known | pair if held else known - pair)

    def _principal(self, user: str) -> Principal:
        return Principal(user, enabled=True, can_disable=self._settings.delete_users_on_leave)

    async def _instance(self) -> _Instance:
        async with self._discovery:
            if self._found is None:
                self._found = await self._discover()
            return self._found

    async def _discover(self) -> _Instance:
        wanted, store = self._settings.instance_arn, self._settings.identity_store_id
        if wanted and store:
            return _Instance(wanted, store)
        instances = await self._clients.all_items(SSO, "list_instances", "Instances")
        if wanted:
            instances = [i for i in instances if i.get("InstanceArn") == wanted]
        if len(instances) != 1:
            found = ", ".join(str(i.get("InstanceArn")) for i in instances) or "none"
            raise PermanentTargetError(
                f"{self.name}: expected exactly one Identity Center instance"
                f"{f' with ARN {wanted}' if wanted else ''}, found {found};"
                " set instance_arn and identity_store_id"
            )
        return _Instance(str(instances[0]["InstanceArn"]), store or instances[0]["IdentityStoreId"])

    async def _resolve(self, role: str) -> tuple[_Instance, str, str | None]:
        account, name = parse_role(role)
        instance = await self._instance()
        return instance, account, await self._permission_sets.arn(instance.arn, name)

    async def _user_id(self, instance: _Instance, user: str) -> str | None:
        known = self._recall(("id", user))
        if isinstance(known, str):
            return known
        found = await self._clients.call_or_none(
            IDENTITY_STORE,
            "get_user_id",
            absent=NOT_FOUND,
            IdentityStoreId=instance.identity_store_id,
            AlternateIdentifier={
                "UniqueAttribute": {"AttributePath": "userName", "AttributeValue": user}
            },
        )
        if found is None:
            return None  # not kept: a principal ensured next creates it
        self._remember(("id", user), str(found["UserId"]))
        return str(found["UserId"])

    async def _user_name(
        self, instance: _Instance, user_id: str, known: dict[str, str | None]
    ) -> str | None:
        if user_id not in known:
            found = await self._clients.call_or_none(
                IDENTITY_STORE,
                "describe_user",
                absent=NOT_FOUND,
                IdentityStoreId=instance.identity_store_id,
                UserId=user_id,
            )
            # None: an assignment left behind by a deleted user, which grants nothing.
            known[user_id] = str(found["UserName"]) if found is not None else None
        return known[user_id]

    async def _assignments(
        self, instance: _Instance, user_id: str, account: str | None = None
    ) -> AsyncIterator[tuple[str, str]]:
        """``(account, permission set ARN)`` of the user's own assignments."""
        params: dict[str, Any] = {"Filter": {"AccountId": account}} if account else {}
        async for item in self._clients.items(
            SSO,
            "list_account_assignments_for_principal",
            "AccountAssignments",
            InstanceArn=instance.arn,
            PrincipalId=user_id,
            PrincipalType="USER",
            **params,
        ):
            # Only direct assignments: one through a group is not ours to report or revoke.
            if item.get("PrincipalType") == "USER" and item.get("PrincipalId") == user_id:
                yield str(item["AccountId"]), str(item["PermissionSetArn"])

    async def _holds(self, instance: _Instance, user_id: str, account: str, arn: str) -> bool:
        known = self._recall(("held", user_id))
        if isinstance(known, frozenset):
            return (account, arn) in known  # listed by this job's read
        return (account, arn) in {
            pair async for pair in self._assignments(instance, user_id, account)
        }

    async def _assign(
        self,
        instance: _Instance,
        action: Literal["create", "delete"],
        account: str,
        arn: str,
        user_id: str,
        what: str,
    ) -> None:
        noun = "Creation" if action == "create" else "Deletion"
        key = f"AccountAssignment{noun}Status"
        response: Response | None = await self._clients.call_or_none(
            SSO,
            f"{action}_account_assignment",
            # Deleting what vanished since it was listed is done; creating never answers it.
            absent=NOT_FOUND if action == "delete" else (),
            InstanceArn=instance.arn,
            TargetId=account,
            TargetType="AWS_ACCOUNT",
            PermissionSetArn=arn,
            PrincipalType="USER",
            PrincipalId=user_id,
        )
        if response is None:
            return
        status: Mapping[str, Any] = response[key]

        async def describe() -> Mapping[str, Any]:
            answer = await self._clients.call(
                SSO,
                f"describe_account_assignment_{noun.lower()}_status",
                InstanceArn=instance.arn,
                **{f"AccountAssignment{noun}RequestId": status["RequestId"]},
            )
            found: Mapping[str, Any] = answer[key]
            return found

        await follow_request(describe, status, what=f"{self.name}: {what}")
