"""Findings that are incidents, not just drift: a privileged role held outside jmlsync, and a
leaver's revoked access found again. Alerted by whichever read finds them."""

from __future__ import annotations

from jmlsync.domain.access import Grant
from jmlsync.engine.alerting import stage_alert
from jmlsync.ports import AlertSink, StagedAlert


def privileged_drift_alert(alerts: AlertSink, grant: Grant, found_by: str) -> StagedAlert:
    """The ``privileged_drift`` alert, staged: ``grant`` is on a privileged role and no rule
    gives it."""
    return stage_alert(
        alerts,
        "privileged_drift",
        f"{grant.user} holds privileged role {grant.role} on {grant.target}, which no rule"
        f" grants (granted outside jmlsync?); found by {found_by}",
        user=grant.user,
        target=grant.target,
        role=grant.role,
        found_by=found_by,
        key=f"{grant.target}/{grant.user}/{grant.role}",
    )


async def privileged_drift(alerts: AlertSink | None, grant: Grant, found_by: str) -> None:
    """Alert ``privileged_drift`` at once, in a transaction of its own."""
    if alerts is None:
        return
    await privileged_drift_alert(alerts, grant, found_by).send()


def leaver_regranted(alerts: AlertSink, grant: Grant, found_by: str) -> StagedAlert:
    """Alert ``leaver_regranted``: a verified leaver holds ``grant`` again (an SLA breach),
    staged to commit with the breach."""
    return stage_alert(
        alerts,
        "leaver_regranted",
        f"leaver {grant.user} holds {grant.role} on {grant.target} again after it was revoked"
        f" and verified (re-granted by hand?): an SLA breach; found by {found_by}",
        user=grant.user,
        target=grant.target,
        role=grant.role,
        found_by=found_by,
        key=f"regranted/{grant.target}/{grant.user}/{grant.role}",
    )
