"""scim2-tester, the python-scim compliance checker, against a real ``jmlsync serve`` process."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from httpx2 import Client
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import CheckResult, Status, check_server

from tests.conftest import TOKENS, ServiceProcess

#: Fewer checks than this means discovery broke and the checker silently dropped some.
MIN_CHECKS = 130


def _run_checker(url: str) -> list[CheckResult]:
    with Client(base_url=url, headers={"Authorization": f"Bearer {TOKENS[1]}"}) as http:
        return check_server(SyncSCIMClient(http))


@pytest.mark.timeout(120)
async def test_every_scim2_tester_check_succeeds(service: ServiceProcess) -> None:
    results = await asyncio.to_thread(_run_checker, service.url)

    failures = [
        f"{r.status.name} {r.resource_type or ''} {r.title}: {r.reason}"
        for r in results
        if r.status != Status.SUCCESS
    ]
    counts = Counter(r.status.name for r in results)
    assert not failures, "\n".join(failures)
    assert len(results) >= MIN_CHECKS, counts
