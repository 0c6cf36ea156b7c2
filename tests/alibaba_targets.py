"""The Alibaba Cloud connectors opened on the wire-contract fake (tests/alibaba_fake.py): their
settings, and the contract suite's factories. Import the fixtures into a test module to use
them there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from jmlsync.ports import Target
from jmlsync.targets.alibaba_cloudsso import CloudSsoTarget
from jmlsync.targets.alibaba_ram import RamTarget
from jmlsync.targets.alibaba_settings import AlibabaCloudSsoTargetSettings, AlibabaRamTargetSettings
from tests.alibaba_fake import ACCOUNT, AlibabaFake
from tests.moto_server import UnderContract


def ram_settings(fake: AlibabaFake, **overrides: Any) -> AlibabaRamTargetSettings:
    values: dict[str, Any] = {"kind": "alibaba-ram", "endpoint": fake.endpoint, "protocol": "http"}
    return AlibabaRamTargetSettings(**(values | overrides))


def cloudsso_settings(fake: AlibabaFake, **overrides: Any) -> AlibabaCloudSsoTargetSettings:
    values: dict[str, Any] = {
        "kind": "alibaba-cloudsso",
        "endpoint": fake.endpoint,
        "protocol": "http",
    }
    return AlibabaCloudSsoTargetSettings(**(values | overrides))


class _FakeRoles:
    """Makes what a contract role names in the fake before its first grant: a RAM group, or a
    CloudSSO access configuration."""

    def __init__(self, fake: AlibabaFake, kind: str) -> None:
        self._fake = fake
        self._kind = kind

    async def ready(self, role: str) -> None:
        if self._kind == "ram":
            self._fake.make_groups(role)
        else:
            self._fake.make_configurations(role)


async def open_ram_target(request: pytest.FixtureRequest, state: Path, *, page_size: int) -> Target:
    """The contract suite's factory: RAM on the fake, a RAM group per role (``group:NAME``)."""
    fake: AlibabaFake = request.getfixturevalue("alibaba")
    target = await RamTarget.open("contract", ram_settings(fake), page_size=page_size)
    return UnderContract(target, _FakeRoles(fake, "ram"), prefix="group:")  # type: ignore[arg-type]


async def open_cloudsso_target(
    request: pytest.FixtureRequest, state: Path, *, page_size: int
) -> Target:
    """The contract suite's factory: CloudSSO on the fake, an access configuration per role
    on ACCOUNT."""
    fake: AlibabaFake = request.getfixturevalue("alibaba")
    target = await CloudSsoTarget.open("contract", cloudsso_settings(fake), page_size=page_size)
    return UnderContract(target, _FakeRoles(fake, "sso"), prefix=f"{ACCOUNT}/")  # type: ignore[arg-type]
