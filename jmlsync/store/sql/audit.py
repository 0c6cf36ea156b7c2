"""SQL of reads of the audit chain."""

from __future__ import annotations

#: The newest rows about one user: subject ``user NAME`` or ``user NAME (...)``.
AUDIT_ABOUT = (
    "SELECT seq, at, actor, action, target, role, outcome, detail FROM audit"
    " WHERE subject = ? OR substr(subject, 1, ?) = ? ORDER BY seq DESC LIMIT ?"
)
#: The columns of :data:`AUDIT_ABOUT`, in its order.
AUDIT_ABOUT_COLUMNS = ("seq", "at", "actor", "action", "target", "role", "outcome", "detail")

#: Every row, in chain order.
AUDIT_ROWS = "SELECT * FROM audit ORDER BY seq"
#: The newest ``?`` rows, in chain order.
RECENT_AUDIT_ROWS = (
    "SELECT * FROM (SELECT * FROM audit ORDER BY seq DESC LIMIT ?) AS recent ORDER BY seq"
)
