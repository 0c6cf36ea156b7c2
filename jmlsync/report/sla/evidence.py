"""What makes an SLA report evidence: who generated it, the scope it covers, the audit chain's
head with its verification, and a SHA-256 of the report's body.

The hash is over the *body*: the JSON report (``sla-report --format json``) without its
``generated`` and ``sha256`` members, serialised canonically (keys sorted, no whitespace:
``separators=(",", ":")``, UTF-8 without escaping: ``ensure_ascii=False``). The same window
over the same records gives the same body, wherever and whenever it is generated, and the HTML
page carries the same hash as the JSON of the same window. Pure: the caller gathers the values.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: The members of the JSON report that describe its generation, left out of the hash.
UNHASHED = ("generated", "sha256")


@dataclass(frozen=True)
class AuditHead:
    """The newest audit row of the window (``seq``, ``hash``; None when there is none) and
    whether the chain up to it verified (``rows_checked`` rows; ``problem`` when broken)."""

    seq: int | None
    hash: str | None
    intact: bool
    rows_checked: int
    problem: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The ``audit`` member of the JSON report."""
        return {
            "head_seq": self.seq,
            "head_hash": self.hash,
            "verify": "intact" if self.intact else "broken",
            "rows_checked": self.rows_checked,
            "problem": self.problem,
        }

    def text(self) -> str:
        """One line for people."""
        head = "no audit row" if self.seq is None else f"seq {self.seq}, hash {self.hash}"
        verdict = f"intact ({self.rows_checked} row(s))" if self.intact else "BROKEN"
        return f"{head}; audit verify: {verdict}" + (f": {self.problem}" if self.problem else "")


@dataclass(frozen=True)
class Evidence:
    """Who generated a report, and the scope it covers."""

    version: str
    host: str
    targets: Mapping[str, str]
    rule_count: int
    privileged_roles: tuple[str, ...]
    audit: AuditHead

    def scope(self) -> dict[str, Any]:
        """The ``scope`` member of the JSON report: targets (name: kind), rules, privileged
        roles (``target/role``)."""
        return {
            "targets": dict(sorted(self.targets.items())),
            "rule_count": self.rule_count,
            "privileged_roles": sorted(self.privileged_roles),
        }


def canonical(body: Mapping[str, Any]) -> bytes:
    """The bytes the hash is taken over."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def body_hash(document: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of ``document`` without its :data:`UNHASHED` members."""
    body = {key: value for key, value in document.items() if key not in UNHASHED}
    return hashlib.sha256(canonical(body)).hexdigest()
