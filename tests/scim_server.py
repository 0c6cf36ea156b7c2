"""A real SCIM peer for the SCIM connector: ``scim2-server`` as a child process on loopback.

One server runs per test session with ``--dynamic-tenants``; each test gets its own tenant (a
fresh, empty directory under ``/<tenant>/v2``), which is much faster than a server per test.
Import the fixtures into a test module to use them there.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from jmlsync.targets.scim import ScimTarget, ScimTargetSettings
from tests.conftest import starts_process

TOKEN = "scim-peer-" + "s" * 32
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"

#: Every role the contract suite grants, created as downstream groups before a test runs.
CONTRACT_ROLES = ("admin", "reader", *(f"role-{i}" for i in range(7)))
CONTRACT_ROLES += tuple(f"role-{i:02}" for i in range(10))


@dataclass(frozen=True)
class ScimPeer:
    """One tenant of the running server: its SCIM base URL and the bearer token it accepts."""

    url: str
    token: str

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """A blocking request for test set-up and inspection; the JSON answer or None."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self.token}",
                "Content-Type": "application/scim+json",
            },
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def create_groups(self, names: Iterable[str]) -> dict[str, str]:
        """Create a group per displayName; returns displayName -> id."""
        ids = {}
        for name in names:
            created = self.call("POST", "/Groups", {"schemas": [GROUP_SCHEMA], "displayName": name})
            ids[name] = created["id"]
        return ids

    def members(self, group_id: str) -> list[str]:
        """The member ids of a group, duplicates kept, straight from the server."""
        group = self.call("GET", f"/Groups/{group_id}?attributes=members")
        return [member["value"] for member in group.get("members") or []]

    def user_names(self) -> dict[str, str]:
        """Every user's id -> userName."""
        found = self.call("GET", "/Users?count=1000")
        return {user["id"]: user["userName"] for user in found.get("Resources") or []}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_until_up(process: subprocess.Popen[bytes], probe: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"scim2-server exited with status {process.returncode}")
        request = urllib.request.Request(probe, headers={"Authorization": f"Bearer {TOKEN}"})
        try:
            with urllib.request.urlopen(request, timeout=1):
                return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.05)
    raise RuntimeError("scim2-server did not answer within 15 s")


@pytest.fixture(scope="session")
@starts_process
def scim_server() -> Iterator[str]:
    """The root URL of a ``scim2-server`` accepting ``TOKEN``, for the whole session."""
    # The CLI cannot report a port it was given as 0, so pick a free one; a race with another
    # process taking it shows as a failed start, not as a wrong peer.
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "scim2_server.testserver.cli",
            "--hostname",
            "127.0.0.1",
            "--port",
            str(port),
            "--bearer-token",
            TOKEN,
            "--dynamic-tenants",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    root = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(process, f"{root}/probe/v2/ServiceProviderConfig")
        yield root
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def scim_peer(scim_server: str) -> ScimPeer:
    """A fresh, empty tenant of the session's server, for this test alone."""
    return ScimPeer(f"{scim_server}/t{uuid.uuid4().hex}/v2", TOKEN)


@pytest.fixture
def scim_contract_peer(scim_peer: ScimPeer) -> ScimPeer:
    """A fresh tenant holding a group for every role the contract suite uses."""
    scim_peer.create_groups(CONTRACT_ROLES)
    return scim_peer


def scim_settings(peer: ScimPeer, state: Path, **overrides: Any) -> ScimTargetSettings:
    """Settings for a connector to ``peer``, its token in a file under ``state``."""
    token_file = state / "scim-token"
    token_file.parent.mkdir(parents=True, exist_ok=True)
    token_file.write_text(f"# token of the test peer\n\n{peer.token}\n")
    values: dict[str, Any] = {"kind": "scim", "url": peer.url, "token_file": token_file}
    return ScimTargetSettings(**(values | overrides))


async def open_scim_target(
    request: pytest.FixtureRequest, state: Path, *, page_size: int
) -> ScimTarget:
    """The contract suite's factory: a connector on this test's tenant, groups created."""
    peer: ScimPeer = request.getfixturevalue("scim_contract_peer")
    return await ScimTarget.open("contract", scim_settings(peer, state), page_size=page_size)
