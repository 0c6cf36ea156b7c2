"""One campaign as the store knows it, gathered for the commands and the API."""

from __future__ import annotations

from jmlsync.engine.reviews import Reviews
from jmlsync.report.review_evidence import CampaignView

__all__ = ["campaign_view", "scope_text"]


async def campaign_view(reviews: Reviews, campaign_id: str) -> CampaignView:
    """Everything the store knows of one campaign."""
    campaign = await reviews.campaign(campaign_id)
    store = reviews.reviews
    definition = reviews.definitions.get(campaign.name)
    exceptions = await store.exceptions(active_only=False)
    return CampaignView(
        campaign=campaign,
        items=await store.items(campaign_id),
        decisions=await store.decisions(campaign_id),
        remediations={r.item_id: r for r in await store.remediations(campaign_id)},
        exceptions={e.item_id: e for e in exceptions if e.campaign == campaign_id},
        scope=scope_text(reviews, campaign.name),
        on_no_decision=definition.on_no_decision if definition else "keep",
    )


def scope_text(reviews: Reviews, name: str) -> str:
    """The scope of campaign ``name`` as one short text."""
    definition = reviews.definitions.get(name)
    if definition is None:
        return "(campaign no longer configured)"
    scope = definition.scope
    if scope.kind == "roles":
        return ", ".join(f"{t}:{r or '*'}" for t, r in sorted(scope.roles, key=str))
    if scope.kind == "rules":
        return "grants of rules " + ", ".join(str(n) for n in sorted(scope.rules))
    return scope.kind
