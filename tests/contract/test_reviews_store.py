"""The review store on both backends: decisions all at once, and review exceptions lifted in
the transaction of the group write that removes their membership."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from jmlsync.audit import AuditEntry
from jmlsync.config import load_settings
from jmlsync.domain.directory import Change, Member, MemberOp
from jmlsync.domain.review_records import NewException
from jmlsync.domain.reviews import Campaign, DecisionRow, Item, Person, Source
from jmlsync.runtime import open_store
from jmlsync.store.directory import SqlStore
from jmlsync.store.reviews import SqlReviews

NOW = datetime(2026, 3, 1, tzinfo=UTC)
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"


@pytest.fixture
async def store(config_path: Path) -> AsyncIterator[SqlStore]:
    opened = await open_store(load_settings(config_path))
    try:
        yield opened
    finally:
        await opened.close()


def _item(item_id: int, user: str) -> Item:
    return Item(
        id=item_id,
        campaign="c1",
        snapshot_at="2026-03-01T00:00:00.000000Z",
        target="sandbox",
        role="admin",
        privileged=True,
        user=Person(user),
        source=Source("rule", 1, "admins"),
        granted_at=None,
        reviewer="boss",
    )


async def _campaign(reviews: SqlReviews, items: list[Item]) -> Campaign:
    campaign = Campaign(
        "c1",
        "q",
        "2026-03-01T00:00:00.000000Z",
        "2026-03-15T00:00:00.000000Z",
        "0" * 64,
        None,
        len(items),
    )
    entry = AuditEntry(
        at=campaign.started_at,
        actor="t",
        action="review.start",
        subject="campaign c1",
        outcome="committed",
    )
    seq = await reviews.create_campaign(campaign, items, "t", entry)
    stored = await reviews.campaign("c1")
    assert stored is not None
    assert stored.audit_seq == seq > 0
    return stored


async def test_exceptions_are_lifted_by_the_membership_change(store: SqlStore) -> None:
    reviews = SqlReviews(store.db)
    ann = await store.create("User", Change({"schemas": [USER], "userName": "Ann@x.io"}), NOW)
    cy = await store.create("User", Change({"schemas": [USER], "userName": "cy@x.io"}), NOW)
    both = (Member(ann.id), Member(cy.id))
    group = await store.create(
        "Group",
        Change({"schemas": [GROUP], "displayName": "admins"}, (MemberOp("add", both),)),
        NOW,
    )
    items = [_item(1, "Ann@x.io"), _item(2, "cy@x.io")]
    campaign = await _campaign(reviews, items)
    rows = [DecisionRow(2, 1, "revoke", "boss", ""), DecisionRow(3, 2, "revoke", "boss", "")]
    jobs = await reviews.record_decisions(
        campaign,
        rows,
        {i.id: i for i in items},
        now=NOW,
        imported_by="t",
        late=False,
        exceptions=[
            NewException(1, ann.id, ((1, group.id, "admins"),)),
            NewException(2, cy.id, ((1, group.id, "admins"),)),
        ],
    )
    assert jobs == 2
    assert [e.grant.user for e in await reviews.exceptions(["ann@X.io"])] == ["Ann@x.io"]
    assert await reviews.pending_revocations(["ANN@x.io"]) == {items[0].grant}

    def keep(members: tuple[Member, ...]) -> Change:
        return Change(
            {"schemas": [GROUP], "displayName": "admins"}, (MemberOp("replace", members),)
        )

    # A full replace that keeps both members changes no membership.
    await store.update("Group", group.id, lambda _current: keep(both), NOW)
    assert len(await reviews.exceptions()) == 2
    # Replaced without Ann: her exception is lifted, Cy's is not.
    await store.update("Group", group.id, lambda _current: keep((Member(cy.id),)), NOW)
    assert [e.grant.user for e in await reviews.exceptions()] == ["cy@x.io"]
    (lifted,) = [e for e in await reviews.exceptions(active_only=False) if e.lifted_at]
    assert lifted.grant.user == "Ann@x.io"
    assert "removed" in (lifted.lifted_reason or "")
    # Lifted by hand (audited), once.
    (cys,) = await reviews.exceptions()
    assert await reviews.lift(cys.id, "approved by the CISO", NOW, "grc") is True
    assert await reviews.lift(cys.id, "again", NOW, "grc") is False
    assert await reviews.exceptions() == []
    # Revoked again, then the group deleted: every exception it caused is lifted.
    await reviews.record_decisions(
        campaign,
        [DecisionRow(2, 2, "revoke", "boss", "")],
        {i.id: i for i in items},
        now=NOW,
        imported_by="t",
        late=False,
        exceptions=[NewException(2, cy.id, ((1, group.id, "admins"),))],
    )
    assert len(await reviews.exceptions()) == 1
    await store.delete("Group", group.id, NOW)
    assert await reviews.exceptions() == []
    # A keep replacing the revoke withdraws the pending revocation.
    await reviews.record_decisions(
        campaign,
        [DecisionRow(2, 1, "keep", "boss", "after all")],
        {i.id: i for i in items},
        now=NOW,
        imported_by="t",
        late=False,
        exceptions=[],
    )
    assert await reviews.pending_revocations() == {items[1].grant}
    decisions = await reviews.decisions("c1")
    assert decisions[1].decision == "keep"
    assert decisions[1].comment == "after all"
    assert decisions[2].audit_seq is not None
