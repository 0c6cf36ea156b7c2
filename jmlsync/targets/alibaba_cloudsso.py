"""Alibaba Cloud CloudSSO: access configurations assigned to CloudSSO users on the accounts of
the resource directory.

A role is ``ACCOUNT_ID/ACCESS_CONFIGURATION_NAME``; a grant is an access assignment of that access
configuration on that resource-directory account (TargetType ``RD-Account``) to the user
(PrincipalType ``User``). Principals are the CloudSSO users of one directory, matched by
userName. Assignments to CloudSSO groups are neither read nor written.

CloudSSO creates and deletes assignments asynchronously: each write answers a task, followed
with GetTaskStatus until it succeeded (see :func:`jmlsync.targets.aws_common.follow_request`),
so a grant that returned is in force. A leaver's user is disabled (UpdateUserStatus
``Disabled``), which ends every CloudSSO sign-in.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

from alibabacloud_cloudsso20210515 import models as sso
from alibabacloud_cloudsso20210515.client import Client

from jmlsync.domain.access import Grant, Principal, PrincipalSpec
from jmlsync.domain.errors import PermanentTargetError, TransientTargetError
from jmlsync.targets.alibaba_common import EXISTS, AlibabaApi, Body, sdk_config
from jmlsync.targets.alibaba_settings import (
    CLOUDSSO_ROLE,
    CLOUDSSO_ROLE_SYNTAX,
    AlibabaCloudSsoTargetSettings,
)
from jmlsync.targets.aws_common import KeyedLocks, follow_request

TARGET_TYPE = "RD-Account"
PRINCIPAL_TYPE = "User"
#: CloudSSO's largest page (``MaxResults``).
PAGE = 100
#: Task statuses as follow_request reads them.
_STATUSES = {"Success": "SUCCEEDED", "Failed": "FAILED"}


def parse_role(role: str) -> tuple[str, str]:
    """``(account id, access configuration name)``; PermanentTargetError when malformed."""
    match = CLOUDSSO_ROLE.fullmatch(role)
    if match is None:
        raise PermanentTargetError(f"role {role!r} is not {CLOUDSSO_ROLE_SYNTAX}")
    return match["account"], match["name"]


def cloudsso_user(directory: str, spec: PrincipalSpec) -> Any:
    """The CreateUser request for ``spec``, enabled, with what the IdP sent."""
    named = " ".join(n for n in (spec.given_name, spec.family_name) if n)
    return sso.CreateUserRequest(
        directory_id=directory,
        user_name=spec.user,
        display_name=spec.display_name or named or spec.user,
        first_name=spec.given_name,
        last_name=spec.family_name,
        email=spec.email,
        status="Enabled",
    )


def _task(body: Body) -> Mapping[str, Any]:
    """A task (or task status) as follow_request reads it."""
    status = str(body.get("Status") or "")
    return {**body, "Status": _STATUSES.get(status, status)}


class CloudSsoTarget:
    """The Target port on the users and access assignments of one CloudSSO directory."""

    kind = "alibaba-cloudsso"

    def __init__(
        self, name: str, settings: AlibabaCloudSsoTargetSettings, api: AlibabaApi, page: int
    ) -> None:
        self.name = name
        self._settings = settings
        self._api = api
        self._page = page
        self._locks = KeyedLocks()
        self._directory: str | None = settings.directory_id
        self._discovery = asyncio.Lock()
        self._configurations: dict[str, str] = {}  # name -> id
        self._refresh = asyncio.Lock()

    @classmethod
    async def open(
        cls, name: str, settings: AlibabaCloudSsoTargetSettings, *, page_size: int | None = None
    ) -> CloudSsoTarget:
        """Make the CloudSSO client; the directory is discovered at the first call, under
        retries. ``page_size`` overrides CloudSSO's page size (tests make pages small)."""
        # A task running on the same access configuration makes CloudSSO refuse another
        # for a moment: OperationConflict.Task clears up.
        api = AlibabaApi(
            "cloudsso",
            Client(sdk_config(settings)),
            settings,
            transient_codes={"OperationConflict.Task"},
        )
        return cls(name, settings, api, page_size or PAGE)

    async def close(self) -> None:
        """Nothing to release: the SDK opens a connection per call."""

    async def ping(self) -> None:
        # The directory's discovery (one call, when not configured), then one user at most.
        directory = await self._directory_id()
        await self._api.call(
            "list_users", sso.ListUsersRequest(directory_id=directory, max_results=1)
        )

    async def list_grants(self) -> AsyncIterator[Grant]:
        directory = await self._directory_id()
        async for item in self._pages(
            "list_access_assignments",
            "AccessAssignments",
            lambda token: sso.ListAccessAssignmentsRequest(
                directory_id=directory,
                principal_type=PRINCIPAL_TYPE,
                target_type=TARGET_TYPE,
                max_results=self._page,
                next_token=token,
            ),
        ):
            if item.get("PrincipalType") == PRINCIPAL_TYPE and item.get("PrincipalName"):
                yield Grant(self.name, str(item["PrincipalName"]), self._role_of(item))

    async def list_principals(self) -> AsyncIterator[Principal]:
        directory = await self._directory_id()
        async for user in self._pages(
            "list_users",
            "Users",
            lambda token: sso.ListUsersRequest(
                directory_id=directory, max_results=self._page, next_token=token
            ),
        ):
            yield Principal(str(user["UserName"]), enabled=user.get("Status") == "Enabled")

    async def grants_of(self, user: str) -> frozenset[str]:
        found = await self._user(user)
        if found is None:
            return frozenset()
        return frozenset([self._role_of(a) async for a in self._assignments(str(found["UserId"]))])

    async def principal(self, user: str) -> Principal | None:
        found = await self._user(user)
        return Principal(user, enabled=found.get("Status") == "Enabled") if found else None

    async def ensure_principal(self, spec: PrincipalSpec) -> None:
        directory = await self._directory_id()
        async with self._locks.hold(spec.user):
            found = await self._user(spec.user)
            if found is None:
                if not self._settings.provision_users:
                    raise PermanentTargetError(
                        f"{self.name}: no CloudSSO user {spec.user!r} (provision_users is off)"
                    )
                created = await self._api.call_or_none(
                    "create_user", cloudsso_user(directory, spec), absent=EXISTS
                )
                if created is not None:
                    return
                found = await self._user(spec.user)  # created meanwhile, elsewhere
                if found is None:
                    raise TransientTargetError(
                        f"{self.name}: CloudSSO user {spec.user!r} came and went"
                    )
            if found.get("Status") != "Enabled":
                await self._status(str(found["UserId"]), "Enabled")

    async def grant(self, user: str, role: str) -> None:
        account, name = parse_role(role)
        configuration = await self._configuration_id(name)
        if configuration is None:
            raise PermanentTargetError(
                f"{self.name}: no access configuration named {name!r} (role {role!r})"
            )
        async with self._locks.hold(user):
            found = await self._user(user)
            if found is None:
                raise PermanentTargetError(f"{self.name}: no CloudSSO user {user!r}")
            user_id = str(found["UserId"])
            if not await self._holds(user_id, account, configuration):
                await self._assign("create", user_id, account, configuration, f"grant {role}")

    async def revoke(self, user: str, role: str) -> None:
        account, name = parse_role(role)
        configuration = await self._configuration_id(name)
        if configuration is None:
            return  # no such access configuration: nobody holds it
        async with self._locks.hold(user):
            found = await self._user(user)
            if found is None:
                return
            user_id = str(found["UserId"])
            if await self._holds(user_id, account, configuration):
                await self._assign("delete", user_id, account, configuration, f"revoke {role}")

    async def disable_principal(self, user: str) -> None:
        async with self._locks.hold(user):
            found = await self._user(user)
            if found is not None and found.get("Status") != "Disabled":
                await self._status(str(found["UserId"]), "Disabled")

    def _role_of(self, assignment: Mapping[str, Any]) -> str:
        return f"{assignment['TargetId']}/{assignment['AccessConfigurationName']}"

    async def _directory_id(self) -> str:
        async with self._discovery:
            if self._directory is None:
                found = await self._api.call("list_directories", None)
                directories = list(found.get("Directories") or ())
                if len(directories) != 1:
                    ids = ", ".join(str(d.get("DirectoryId")) for d in directories) or "none"
                    raise PermanentTargetError(
                        f"{self.name}: expected exactly one CloudSSO directory, found {ids};"
                        " set directory_id"
                    )
                self._directory = str(directories[0]["DirectoryId"])
            return self._directory

    async def _pages(
        self, operation: str, key: str, request: Any
    ) -> AsyncIterator[Mapping[str, Any]]:
        """Every item under ``key`` of every page, paged with NextToken while IsTruncated."""
        token: str | None = None
        while True:
            page = await self._api.call(operation, request(token))
            for item in page.get(key) or ():
                yield item
            token = page.get("NextToken")
            if not page.get("IsTruncated") or not token:
                return

    async def _user(self, user: str) -> Mapping[str, Any] | None:
        directory = await self._directory_id()
        found = await self._api.call(
            "list_users",
            sso.ListUsersRequest(directory_id=directory, filter=f"UserName eq {user}"),
        )
        # The filter compares case-insensitively; the userName is matched exactly here.
        exact = [u for u in found.get("Users") or () if u.get("UserName") == user]
        return exact[0] if exact else None

    async def _configuration_id(self, name: str) -> str | None:
        if name not in self._configurations:
            async with self._refresh:
                if name not in self._configurations:
                    directory = await self._directory_id()
                    self._configurations = {
                        str(c["AccessConfigurationName"]): str(c["AccessConfigurationId"])
                        async for c in self._pages(
                            "list_access_configurations",
                            "AccessConfigurations",
                            lambda token: sso.ListAccessConfigurationsRequest(
                                directory_id=directory, max_results=self._page, next_token=token
                            ),
                        )
                    }
        return self._configurations.get(name)

    async def _assignments(
        self, user_id: str, account: str | None = None, configuration: str | None = None
    ) -> AsyncIterator[Mapping[str, Any]]:
        """The user's own assignments (on one account and access configuration, if given)."""
        directory = await self._directory_id()
        async for item in self._pages(
            "list_access_assignments",
            "AccessAssignments",
            lambda token: sso.ListAccessAssignmentsRequest(
                directory_id=directory,
                principal_type=PRINCIPAL_TYPE,
                principal_id=user_id,
                target_type=TARGET_TYPE,
                target_id=account,
                access_configuration_id=configuration,
                max_results=self._page,
                next_token=token,
            ),
        ):
            # Only the user's own assignments: one through a group is not ours.
            mine = item.get("PrincipalId") == user_id
            if mine and item.get("PrincipalType") == PRINCIPAL_TYPE:
                yield item

    async def _holds(self, user_id: str, account: str, configuration: str) -> bool:
        async for item in self._assignments(user_id, account, configuration):
            if (
                item.get("TargetId") == account
                and item.get("AccessConfigurationId") == configuration
            ):
                return True
        return False

    async def _status(self, user_id: str, status: str) -> None:
        directory = await self._directory_id()
        await self._api.call(
            "update_user_status",
            sso.UpdateUserStatusRequest(directory_id=directory, user_id=user_id, new_status=status),
        )

    async def _assign(
        self, action: str, user_id: str, account: str, configuration: str, what: str
    ) -> None:
        directory = await self._directory_id()
        fields: dict[str, Any] = {
            "directory_id": directory,
            "access_configuration_id": configuration,
            "target_type": TARGET_TYPE,
            "target_id": account,
            "principal_type": PRINCIPAL_TYPE,
            "principal_id": user_id,
        }
        if action == "create":
            # "Already exists": created meanwhile by another process, in force.
            answer = await self._api.call_or_none(
                "create_access_assignment",
                sso.CreateAccessAssignmentRequest(**fields),
                absent=EXISTS,
            )
        else:
            # "Not found": deleted since it was listed, done.
            answer = await self._api.call_or_none(
                "delete_access_assignment", sso.DeleteAccessAssignmentRequest(**fields)
            )
        if answer is None or not answer.get("Task"):
            return
        task_id = str(answer["Task"]["TaskId"])

        async def status() -> Mapping[str, Any]:
            found = await self._api.call(
                "get_task_status",
                sso.GetTaskStatusRequest(directory_id=directory, task_id=task_id),
            )
            return _task(found.get("TaskStatus") or {})

        await follow_request(status, _task(answer["Task"]), what=f"{self.name}: {what}")
