"""Wire-contract fake of Alibaba Cloud RAM and CloudSSO.

No emulator of Alibaba Cloud exists, so the ``alibaba-ram`` and ``alibaba-cloudsso`` connectors
are tested against this loopback HTTP server, written here. It speaks what the official SDKs
really send (``alibabacloud-tea-openapi``'s V3 request syntax): it recomputes and checks the
``ACS3-HMAC-SHA256`` signature of every request (canonical request over the method, path, query
and signed headers, ``x-acs-content-sha256`` of the body, the date and a single-use nonce),
dispatches on the ``x-acs-action`` and ``x-acs-version`` headers, and answers the JSON shapes of
the API reference, errors included (``Code``, ``Message``, ``RequestId``, ``HostId``).

It is a fake: its state is a few dictionaries, its IDs look like Alibaba's but mean nothing,
and CloudSSO's tasks complete at once unless a test asks for ``task_polls`` in progress first.
Faults are injected on demand (:class:`FaultPlan`): throttling (with and without
``x-acs-retry-after``), 503, and answers lost after a write was applied. Every applied write is
counted, so tests can prove none was made twice.

The server runs on its own event loop in a thread, so a test may block, or drive a child
``jmlsync serve``, while the fake answers.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web

from tests.alibaba_fake_apis import SYSTEM_POLICIES, ApiError, CloudSsoApi, RamApi, Task, now

ACCESS_KEY_ID = "LTAI5tFakeKeyForTests"
ACCESS_KEY_SECRET = "fake-secret-for-the-wire-contract-fake"
RAM_VERSION = "2015-05-01"
CLOUDSSO_VERSION = "2021-05-15"
#: A resource-directory member account (Alibaba Cloud account ids are 16 digits).
ACCOUNT = "1234567890123456"
WRITES = ("Create", "Delete", "Add", "Remove", "Attach", "Detach", "Update")
_ALGORITHM = "ACS3-HMAC-SHA256"


def _canonical_query(query: dict[str, str]) -> str:
    return "&".join(f"{k}={quote(query[k], safe='~')}" for k in sorted(query))


def verify_signature(
    method: str, path: str, query: dict[str, str], headers: dict[str, list[str]], body: bytes
) -> None:
    """Check a V3 (ACS3-HMAC-SHA256) signature as Alibaba Cloud's gateway does; ApiError when
    it is missing, malformed, stale, replayed or wrong. ``headers`` by lower-case name."""
    authorization = (headers.get("authorization") or [""])[0]
    algorithm, _, rest = authorization.partition(" ")
    parts = dict(p.split("=", 1) for p in rest.split(",") if "=" in p)
    if algorithm != _ALGORITHM or not {"Credential", "SignedHeaders", "Signature"} <= set(parts):
        raise ApiError(400, "IncompleteSignature", "The request signature is missing or malformed.")
    if parts["Credential"] != ACCESS_KEY_ID:
        raise ApiError(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
    payload = hashlib.sha256(body).hexdigest()
    if (headers.get("x-acs-content-sha256") or [""])[0] != payload:
        raise ApiError(400, "IncompleteSignature", "The payload hash does not match the body.")
    signed = parts["SignedHeaders"].split(";")
    required = {"host", "x-acs-action", "x-acs-version", "x-acs-date", "x-acs-signature-nonce"}
    if not required <= set(signed) or signed != sorted(signed):
        raise ApiError(400, "IncompleteSignature", "Required headers are not signed.")
    canonical_headers = "".join(
        f"{name}:{','.join(sorted(v.strip() for v in headers.get(name, [])))}\n" for name in signed
    )
    canonical = "\n".join(
        [method, path or "/", _canonical_query(query), canonical_headers, ";".join(signed), payload]
    )
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    expected = hmac.new(
        ACCESS_KEY_SECRET.encode(), f"{_ALGORITHM}\n{digest}".encode(), hashlib.sha256
    ).hexdigest()
    if not hmac.compare_digest(expected, parts["Signature"]):
        raise ApiError(
            400, "SignatureDoesNotMatch", "The request signature does not conform to standards."
        )
    sent = datetime.strptime(headers["x-acs-date"][0], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    if abs(datetime.now(UTC) - sent) > timedelta(minutes=15):
        raise ApiError(400, "InvalidTimeStamp.Expired", "Specified time stamp is expired.")


@dataclass
class FaultPlan:
    """Every ``every``-th request fails, in turn throttled, throttled with a wait, 503; the
    answer to every ``lose_every``-th applied write is lost (the connection drops)."""

    every: int = 4
    lose_every: int = 3
    retry_after_ms: int = 40
    kinds: tuple[str, ...] = ("throttled", "throttled-retry-after", "unavailable")
    injected: Counter[str] = field(default_factory=Counter)


class AlibabaFake(RamApi, CloudSsoApi):
    """The state of one fake account (RAM) and one CloudSSO directory, and the server."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._nonces: set[str] = set()
        self.endpoint = ""
        self.reset()

    # Set-up and inspection, from the tests (any thread).

    def reset(self) -> None:
        """Empty every product; no faults, tasks completing at once."""
        with self._lock:
            self.ram_users: dict[str, dict[str, Any]] = {}
            self.ram_groups: dict[str, list[str]] = {}  # group -> member user names
            self.ram_policies: set[tuple[str, str]] = {("System", p) for p in SYSTEM_POLICIES}
            self.ram_attached: dict[str, list[tuple[str, str]]] = {}
            self.login_profiles: set[str] = set()
            self.access_keys: dict[str, list[dict[str, str]]] = {}
            self.directory = f"d-{self._id()}"
            self.sso_users: dict[str, dict[str, Any]] = {}  # id -> user
            self.configurations: dict[str, str] = {}  # id -> name
            self.assignments: list[dict[str, str]] = []
            self.tasks: dict[str, Task] = {}
            self.task_polls = 0
            self.fail_tasks = False
            self.plan: FaultPlan | None = None
            self.requests = 0
            self.actions: Counter[str] = Counter()
            self.writes: Counter[tuple[str, str]] = Counter()
            self.rejected: Counter[str] = Counter()

    def make_groups(self, *names: str) -> None:
        with self._lock:
            for name in names:
                self.ram_groups.setdefault(name, [])

    def make_custom_policy(self, name: str) -> None:
        with self._lock:
            self.ram_policies.add(("Custom", name))

    def give_credentials(self, user: str, keys: int = 2) -> None:
        """A console password and ``keys`` active access keys for the RAM user ``user``."""
        with self._lock:
            self.login_profiles.add(user)
            self.access_keys[user] = [
                {"AccessKeyId": f"LTAI{self._id():016d}", "Status": "Active", "CreateDate": now()}
                for _ in range(keys)
            ]

    def make_configurations(self, *names: str) -> dict[str, str]:
        """Access configurations by name; name -> id."""
        with self._lock:
            made = {}
            for name in names:
                found = next((i for i, n in self.configurations.items() if n == name), None)
                made[name] = found or f"ac-{self._id():012d}"
                self.configurations[made[name]] = name
            return made

    def group_members(self, group: str) -> list[str]:
        with self._lock:
            return list(self.ram_groups[group])

    def held(self) -> list[tuple[str, str, str]]:
        """Every CloudSSO assignment as (userName, account, access configuration name),
        duplicates kept."""
        with self._lock:
            return [
                (
                    self.sso_users[a["PrincipalId"]]["UserName"],
                    a["TargetId"],
                    self.configurations[a["AccessConfigurationId"]],
                )
                for a in self.assignments
            ]

    def sso_user(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            return next((dict(u) for u in self.sso_users.values() if u["UserName"] == name), None)

    # The server.

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers: dict[str, list[str]] = {}
        for name, value in request.headers.items():
            headers.setdefault(name.lower(), []).append(value)
        query = dict(request.query)
        request_id = str(uuid.uuid4()).upper()
        action = (headers.get("x-acs-action") or [""])[0]
        with self._lock:
            self.requests += 1
            number = self.requests
            try:
                verify_signature(request.method, request.path, query, headers, body)
                nonce = headers["x-acs-signature-nonce"][0]
                if nonce in self._nonces:
                    raise ApiError(400, "SignatureNonceUsed", "Specified signature nonce was used.")
                self._nonces.add(nonce)
                handler = self._handler(action, (headers.get("x-acs-version") or [""])[0])
            except ApiError as error:
                self.rejected[error.code] += 1
                return _error(error, request_id)
            fault = self._fault(number)
            if fault is not None:
                return fault
            self.actions[action] += 1
            try:
                answer = handler(query)
            except ApiError as error:
                return _error(error, request_id)
            lost = False
            if action.startswith(WRITES):
                self.writes[(action, json.dumps(query, sort_keys=True))] += 1
                plan = self.plan
                if plan is not None and self.writes.total() % plan.lose_every == 0:
                    plan.injected["answer-lost"] += 1
                    lost = True
        if lost and request.transport is not None:
            # Applied, but the client never hears it: the connection drops.
            request.transport.close()
            return web.Response(status=503)
        return web.json_response({"RequestId": request_id, **answer})

    def _fault(self, number: int) -> web.Response | None:
        plan = self.plan
        if plan is None or number % plan.every:
            return None
        kind = plan.kinds[(number // plan.every) % len(plan.kinds)]
        plan.injected[kind] += 1
        request_id = str(uuid.uuid4()).upper()
        if kind == "unavailable":
            error = ApiError(
                503, "ServiceUnavailable", "The request has failed due to a temporary failure."
            )
            return _error(error, request_id)
        headers = {"x-acs-retry-after": str(plan.retry_after_ms)} if "after" in kind else {}
        error = ApiError(400, "Throttling.User", "Request was denied due to user flow control.")
        return _error(error, request_id, headers)

    def _handler(self, action: str, version: str) -> Callable[[dict[str, str]], dict[str, Any]]:
        products = {RAM_VERSION: "_ram_", CLOUDSSO_VERSION: "_sso_"}
        if version not in products:
            raise ApiError(400, "InvalidVersion", "Specified parameter Version is not valid.")
        handler = getattr(self, products[version] + action, None)
        if not action or handler is None:
            raise ApiError(
                404, "InvalidAction.NotFound", f"Specified api is not found: {action!r}."
            )
        return handler  # type: ignore[no-any-return]

    def _id(self) -> int:
        return next(self._ids)


def _error(error: ApiError, request_id: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {
        "RequestId": request_id,
        "HostId": "fake.aliyuncs.com",
        "Code": error.code,
        "Message": error.message,
        "Recommend": "https://api.aliyun.com/troubleshoot",
    }
    return web.json_response(body, status=error.status, headers=headers)


class _Running:
    """The fake's server on its own event loop, in a thread."""

    def __init__(self, fake: AlibabaFake) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", fake.handle)
        self.runner = web.AppRunner(app, access_log=None)
        future = asyncio.run_coroutine_threadsafe(self._start(), self.loop)
        port = future.result(timeout=10)
        fake.endpoint = f"127.0.0.1:{port}"

    async def _start(self) -> int:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return int(self.runner.addresses[0][1])

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture(scope="session")
def alibaba_server() -> Iterator[AlibabaFake]:
    """The wire-contract fake on loopback, for the whole session."""
    fake = AlibabaFake()
    running = _Running(fake)
    try:
        yield fake
    finally:
        running.stop()


@pytest.fixture
def alibaba_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """The fake's access key in the environment, where the credential chain looks first, and
    no profile file or ECS metadata to find others. A child ``jmlsync serve`` inherits it."""
    from alibabacloud_credentials.utils import auth_util

    values = {
        "ALIBABA_CLOUD_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": ACCESS_KEY_SECRET,
        "ALIBABA_CLOUD_ECS_METADATA_DISABLED": "true",
        "ALIBABA_CLOUD_CLI_PROFILE_DISABLED": "true",
        "ALIBABA_CLOUD_CREDENTIALS_FILE": str(tmp_path / "no-alibaba-credentials"),
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    for key in ("ALIBABA_CLOUD_SECURITY_TOKEN", "ALIBABA_CLOUD_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    # alibabacloud-credentials reads the environment once, when first imported: the copy it
    # took is set too, for this process.
    monkeypatch.setattr(auth_util, "environment_access_key_id", ACCESS_KEY_ID)
    monkeypatch.setattr(auth_util, "environment_access_key_secret", ACCESS_KEY_SECRET)
    monkeypatch.setattr(auth_util, "environment_security_token", None)
    monkeypatch.setattr(auth_util, "environment_ecs_metadata_disabled", "true")
    monkeypatch.setattr(auth_util, "environment_cli_profile_disabled", "true")
    monkeypatch.setattr(
        auth_util, "environment_credentials_file", values["ALIBABA_CLOUD_CREDENTIALS_FILE"]
    )


@pytest.fixture(name="alibaba")
def alibaba_fixture(alibaba_server: AlibabaFake, alibaba_env: None) -> AlibabaFake:
    """``alibaba``: the session's fake, emptied for this test, with credentials for it."""
    alibaba_server.reset()
    return alibaba_server
