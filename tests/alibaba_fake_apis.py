"""The operations of the wire-contract fake of Alibaba Cloud RAM and CloudSSO (see
tests/alibaba_fake.py): one method per API action, named ``_ram_ACTION`` or ``_sso_ACTION``,
answering the JSON shapes of the API reference from the fake's state."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

#: The names each API accepts, from its reference.
RAM_USER_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
CLOUDSSO_USER_NAME = re.compile(r"[A-Za-z0-9@_.-]{1,64}")
SYSTEM_POLICIES = ("AdministratorAccess", "AliyunOSSReadOnlyAccess", "AliyunECSFullAccess")


class ApiError(Exception):
    """An error answer: HTTP status, Code, Message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(code)
        self.status, self.code, self.message = status, code, message


@dataclass
class Task:
    """A CloudSSO task: its status, and how many more polls answer InProgress."""

    status: str
    polls: int
    kind: str
    reason: str | None = None


class RamApi:
    """RAM (2015-05-01) on the state of :class:`tests.alibaba_fake.AlibabaFake`."""

    ram_users: dict[str, dict[str, Any]]
    ram_groups: dict[str, list[str]]
    ram_policies: set[tuple[str, str]]
    ram_attached: dict[str, list[tuple[str, str]]]
    login_profiles: set[str]
    access_keys: dict[str, list[dict[str, str]]]

    def _id(self) -> int:
        raise NotImplementedError

    def _ram_user(self, query: dict[str, str]) -> dict[str, Any]:
        name = required(query, "UserName")
        if name not in self.ram_users:
            raise ApiError(404, "EntityNotExist.User", f"The user does not exist: {name}.")
        return self.ram_users[name]

    def _ram_GetUser(self, query: dict[str, str]) -> dict[str, Any]:
        return {"User": dict(self._ram_user(query))}

    def _ram_CreateUser(self, query: dict[str, str]) -> dict[str, Any]:
        name = required(query, "UserName")
        if not RAM_USER_NAME.fullmatch(name):
            raise ApiError(
                400, "InvalidParameter.UserName.InvalidChars", "UserName contains invalid chars."
            )
        if name in self.ram_users:
            raise ApiError(409, "EntityAlreadyExists.User", f"The user already exists: {name}.")
        user = {
            "UserName": name,
            "UserId": f"2{self._id():015d}",
            "DisplayName": query.get("DisplayName", name),
            "Comments": query.get("Comments", ""),
            "CreateDate": now(),
            "UpdateDate": now(),
        }
        self.ram_users[name] = user
        return {"User": dict(user)}

    def _ram_UpdateUser(self, query: dict[str, str]) -> dict[str, Any]:
        user = self._ram_user(query)
        if "NewComments" in query:
            user["Comments"] = query["NewComments"]
        user["UpdateDate"] = now()
        return {"User": dict(user)}

    def _ram_ListUsers(self, query: dict[str, str]) -> dict[str, Any]:
        users, marker = paged(sorted(self.ram_users), query, "Marker", "MaxItems", 100)
        listed = [dict(self.ram_users[n]) for n in users]
        return {"Users": {"User": listed}, "IsTruncated": marker is not None} | (
            {"Marker": marker} if marker else {}
        )

    def _ram_group(self, query: dict[str, str]) -> list[str]:
        name = required(query, "GroupName")
        if name not in self.ram_groups:
            raise ApiError(404, "EntityNotExist.Group", f"The group does not exist: {name}.")
        return self.ram_groups[name]

    def _ram_AddUserToGroup(self, query: dict[str, str]) -> dict[str, Any]:
        members, user = self._ram_group(query), self._ram_user(query)["UserName"]
        if user in members:
            raise ApiError(
                409, "EntityAlreadyExists.User.Group", "The user already belongs to the group."
            )
        members.append(user)
        return {}

    def _ram_RemoveUserFromGroup(self, query: dict[str, str]) -> dict[str, Any]:
        members, user = self._ram_group(query), self._ram_user(query)["UserName"]
        if user not in members:
            raise ApiError(404, "EntityNotExist.User.Group", "The user is not in the group.")
        members.remove(user)
        return {}

    def _ram_ListGroupsForUser(self, query: dict[str, str]) -> dict[str, Any]:
        user = self._ram_user(query)["UserName"]
        groups = [
            {"GroupName": g, "Comments": "", "JoinDate": now()}
            for g, members in sorted(self.ram_groups.items())
            if user in members
        ]
        return {"Groups": {"Group": groups}}

    def _ram_policy(self, query: dict[str, str]) -> tuple[str, str]:
        policy = (required(query, "PolicyType"), required(query, "PolicyName"))
        if policy not in self.ram_policies:
            raise ApiError(404, "EntityNotExist.Policy", f"The policy does not exist: {policy}.")
        return policy

    def _ram_AttachPolicyToUser(self, query: dict[str, str]) -> dict[str, Any]:
        policy, user = self._ram_policy(query), self._ram_user(query)["UserName"]
        attached = self.ram_attached.setdefault(user, [])
        if policy in attached:
            raise ApiError(
                409, "EntityAlreadyExists.User.Policy", "The policy is already attached."
            )
        attached.append(policy)
        return {}

    def _ram_DetachPolicyFromUser(self, query: dict[str, str]) -> dict[str, Any]:
        policy, user = self._ram_policy(query), self._ram_user(query)["UserName"]
        attached = self.ram_attached.setdefault(user, [])
        if policy not in attached:
            raise ApiError(404, "EntityNotExist.User.Policy", "The policy is not attached.")
        attached.remove(policy)
        return {}

    def _ram_ListPoliciesForUser(self, query: dict[str, str]) -> dict[str, Any]:
        user = self._ram_user(query)["UserName"]
        policies = [
            {"PolicyType": kind, "PolicyName": name, "DefaultVersion": "v1", "AttachDate": now()}
            for kind, name in self.ram_attached.get(user, [])
        ]
        return {"Policies": {"Policy": policies}}

    def _ram_DeleteLoginProfile(self, query: dict[str, str]) -> dict[str, Any]:
        user = self._ram_user(query)["UserName"]
        if user not in self.login_profiles:
            raise ApiError(
                404, "EntityNotExist.User.LoginProfile", "The login profile does not exist."
            )
        self.login_profiles.discard(user)
        return {}

    def _ram_ListAccessKeys(self, query: dict[str, str]) -> dict[str, Any]:
        user = self._ram_user(query)["UserName"]
        return {"AccessKeys": {"AccessKey": [dict(k) for k in self.access_keys.get(user, [])]}}

    def _ram_UpdateAccessKey(self, query: dict[str, str]) -> dict[str, Any]:
        user = self._ram_user(query)["UserName"]
        wanted = required(query, "UserAccessKeyId")
        status = required(query, "Status")
        if status not in {"Active", "Inactive"}:
            raise ApiError(400, "InvalidParameter.Status", f"Invalid status {status!r}.")
        for key in self.access_keys.get(user, []):
            if key["AccessKeyId"] == wanted:
                key["Status"] = status
                return {}
        raise ApiError(404, "EntityNotExist.User.AccessKey", "The access key does not exist.")


class CloudSsoApi:
    """CloudSSO (2021-05-15) on the state of :class:`tests.alibaba_fake.AlibabaFake`."""

    directory: str
    sso_users: dict[str, dict[str, Any]]
    configurations: dict[str, str]
    assignments: list[dict[str, str]]
    tasks: dict[str, Task]
    task_polls: int
    fail_tasks: bool

    def _id(self) -> int:
        raise NotImplementedError

    def _sso_directory(self, query: dict[str, str]) -> None:
        if required(query, "DirectoryId") != self.directory:
            raise ApiError(404, "EntityNotExists.Directory", "The directory does not exist.")

    def _sso_ListDirectories(self, query: dict[str, str]) -> dict[str, Any]:
        directory = {
            "DirectoryId": self.directory,
            "DirectoryName": "fake",
            "Region": "cn-shanghai",
        }
        return {"Directories": [directory], "TotalCounts": 1}

    def _sso_ListUsers(self, query: dict[str, str]) -> dict[str, Any]:
        self._sso_directory(query)
        users = sorted(self.sso_users.values(), key=lambda u: u["UserName"])
        wanted = query.get("Filter")
        if wanted:
            attribute, operator, value = ([*wanted.split(" ", 2), "", ""])[:3]
            if attribute.lower() != "username" or operator.lower() not in {"eq", "sw"}:
                raise ApiError(400, "InvalidParameter.Filter", f"Invalid filter {wanted!r}.")
            fold = value.lower()
            users = [
                u
                for u in users
                if (u["UserName"].lower() == fold)
                or (operator.lower() == "sw" and u["UserName"].lower().startswith(fold))
            ]
        found_page, token = paged(users, query, "NextToken", "MaxResults", 10, limit=100)
        return listing("Users", [dict(u) for u in found_page], token, len(users))

    def _sso_CreateUser(self, query: dict[str, str]) -> dict[str, Any]:
        self._sso_directory(query)
        name = required(query, "UserName")
        if not CLOUDSSO_USER_NAME.fullmatch(name):
            raise ApiError(400, "InvalidParameter.UserName", "The UserName is invalid.")
        if any(u["UserName"].lower() == name.lower() for u in self.sso_users.values()):
            raise ApiError(409, "EntityAlreadyExists.User", f"The user already exists: {name}.")
        user = {
            "UserId": f"u-{self._id():012d}",
            "UserName": name,
            "DisplayName": query.get("DisplayName", ""),
            "FirstName": query.get("FirstName", ""),
            "LastName": query.get("LastName", ""),
            "Email": query.get("Email", ""),
            "Status": query.get("Status", "Enabled"),
            "ProvisionType": "Manual",
            "CreateTime": now(),
            "UpdateTime": now(),
        }
        self.sso_users[user["UserId"]] = user
        return {"User": dict(user)}

    def _sso_user(self, user_id: str) -> dict[str, Any]:
        if user_id not in self.sso_users:
            raise ApiError(404, "EntityNotExists.User", f"The user does not exist: {user_id}.")
        return self.sso_users[user_id]

    def _sso_UpdateUserStatus(self, query: dict[str, str]) -> dict[str, Any]:
        self._sso_directory(query)
        user = self._sso_user(required(query, "UserId"))
        status = required(query, "NewStatus")
        if status not in {"Enabled", "Disabled"}:
            raise ApiError(400, "InvalidParameter.NewStatus", f"Invalid status {status!r}.")
        user["Status"] = status
        return {}

    def _sso_ListAccessConfigurations(self, query: dict[str, str]) -> dict[str, Any]:
        self._sso_directory(query)
        items = [
            {"AccessConfigurationId": i, "AccessConfigurationName": n, "SessionDuration": 3600}
            for i, n in sorted(self.configurations.items())
        ]
        found_page, token = paged(items, query, "NextToken", "MaxResults", 10, limit=100)
        return listing("AccessConfigurations", found_page, token, len(items))

    def _sso_ListAccessAssignments(self, query: dict[str, str]) -> dict[str, Any]:
        self._sso_directory(query)
        if "TargetId" in query and "TargetType" not in query:
            raise ApiError(400, "MissingParameter.TargetType", "TargetType is mandatory.")
        keys = ("AccessConfigurationId", "TargetType", "TargetId", "PrincipalType", "PrincipalId")
        found = [a for a in self.assignments if all(a[k] == query[k] for k in keys if k in query)]
        items = [self._assignment_view(a) for a in found]
        found_page, token = paged(items, query, "NextToken", "MaxResults", 10, limit=100)
        return listing("AccessAssignments", found_page, token, len(items))

    def _assignment_view(self, assignment: dict[str, str]) -> dict[str, Any]:
        return {
            **assignment,
            "AccessConfigurationName": self.configurations[assignment["AccessConfigurationId"]],
            "PrincipalName": self.sso_users[assignment["PrincipalId"]]["UserName"],
            "TargetName": f"account-{assignment['TargetId']}",
            "CreateTime": now(),
        }

    def _sso_assignment(self, query: dict[str, str]) -> dict[str, str]:
        self._sso_directory(query)
        assignment = {
            "AccessConfigurationId": required(query, "AccessConfigurationId"),
            "TargetType": required(query, "TargetType"),
            "TargetId": required(query, "TargetId"),
            "PrincipalType": required(query, "PrincipalType"),
            "PrincipalId": required(query, "PrincipalId"),
        }
        if assignment["AccessConfigurationId"] not in self.configurations:
            raise ApiError(
                404, "EntityNotExists.AccessConfiguration", "The access configuration is unknown."
            )
        if assignment["TargetType"] != "RD-Account" or assignment["PrincipalType"] not in {
            "User",
            "Group",
        }:
            raise ApiError(400, "InvalidParameter", "Invalid TargetType or PrincipalType.")
        self._sso_user(assignment["PrincipalId"])
        return assignment

    def _task(self, kind: str, assignment: dict[str, str]) -> dict[str, Any]:
        task_id = f"t-{self._id():012d}"
        task = Task("InProgress" if self.task_polls else "Success", self.task_polls, kind)
        if self.fail_tasks:
            # Failures show in the task's status, not in the answer to the write.
            task = Task("InProgress", 0, kind, "The access configuration cannot be provisioned.")
        self.tasks[task_id] = task
        return {"Task": {"TaskId": task_id, "TaskType": kind, "Status": task.status, **assignment}}

    def _sso_CreateAccessAssignment(self, query: dict[str, str]) -> dict[str, Any]:
        assignment = self._sso_assignment(query)
        if assignment in self.assignments:
            raise ApiError(
                409, "EntityAlreadyExists.AccessAssignment", "The access assignment exists."
            )
        answer = self._task("CreateAccessAssignment", assignment)
        if not self.fail_tasks:
            self.assignments.append(assignment)
        return answer

    def _sso_DeleteAccessAssignment(self, query: dict[str, str]) -> dict[str, Any]:
        assignment = self._sso_assignment(query)
        if assignment not in self.assignments:
            raise ApiError(
                404, "EntityNotExists.AccessAssignment", "The access assignment does not exist."
            )
        answer = self._task("DeleteAccessAssignment", assignment)
        if not self.fail_tasks:
            self.assignments.remove(assignment)
        return answer

    def _sso_GetTaskStatus(self, query: dict[str, str]) -> dict[str, Any]:
        self._sso_directory(query)
        task_id = required(query, "TaskId")
        task = self.tasks.get(task_id)
        if task is None:
            raise ApiError(404, "EntityNotExists.Task", f"The task does not exist: {task_id}.")
        if task.status == "InProgress":
            task.polls -= 1
            if task.polls < 0:
                task.status = "Failed" if task.reason else "Success"
        status = {"TaskId": task_id, "TaskType": task.kind, "Status": task.status}
        if task.reason:
            status["FailureReason"] = task.reason
        return {"TaskStatus": status}


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def required(query: dict[str, str], name: str) -> str:
    value = query.get(name)
    if not value:
        raise ApiError(400, f"MissingParameter.{name}", f"{name} is mandatory for this action.")
    return value


def paged(
    items: list[Any], query: dict[str, str], token: str, size: str, default: int, limit: int = 1000
) -> tuple[list[Any], str | None]:
    """One page from the opaque token (here: an offset) and the page size asked for."""
    try:
        start = int(query.get(token) or 0)
        count = int(query.get(size) or default)
    except ValueError:
        raise ApiError(400, f"InvalidParameter.{token}", "Invalid paging parameter.") from None
    if not 1 <= count <= limit:
        raise ApiError(400, f"InvalidParameter.{size}", f"{size} must be 1 to {limit}.")
    end = start + count
    return items[start:end], (str(end) if end < len(items) else None)


def listing(key: str, items: list[Any], token: str | None, total: int) -> dict[str, Any]:
    answer = {key: items, "IsTruncated": token is not None, "TotalCounts": total}
    return answer | ({"NextToken": token} if token else {})
