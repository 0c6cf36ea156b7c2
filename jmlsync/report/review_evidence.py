"""Access-review exports and the evidence bundle an auditor receives.

Rendering and checking only: the command gathers the campaign from the store and hands it
here. The bundle is a directory of plain files, ``manifest.json`` listing the SHA-256 of each
and the audit-chain rows that anchor them (the campaign's start, which carries the
snapshot's hash, and the row the bundle itself was recorded in, which carries every file's
hash). :func:`verify_bundle` re-checks all of it without the store.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from html import escape
from pathlib import Path
from typing import Any

from jmlsync.audit import AuditEntry, chain_hash
from jmlsync.domain.review_records import Decision, Remediation, ReviewException
from jmlsync.domain.reviews import Campaign, Item, item_from_dict, snapshot_digest

#: The files of a bundle besides the manifest, in the order the manifest lists them.
BUNDLE_FILES = (
    "snapshot.csv",
    "snapshot.json",
    "decisions.csv",
    "remediation.csv",
    "sla-report.csv",
    "sla-report.html",
    "summary.html",
)
MANIFEST = "manifest.json"

SNAPSHOT_COLUMNS = (
    "item_id",
    "campaign",
    "snapshot_at",
    "target",
    "role",
    "privileged",
    "user",
    "display_name",
    "active",
    "manager",
    "source",
    "granted_at",
    "reviewer",
)
DECISION_COLUMNS = (
    "item_id",
    "target",
    "role",
    "user",
    "source",
    "reviewer",
    "decision",
    "decided_by",
    "decided_at",
    "comment",
    "imported_by",
    "late",
)
REMEDIATION_COLUMNS = (
    "item_id",
    "target",
    "role",
    "user",
    "job",
    "requested_at",
    "revoked_at",
    "verified_at",
    "exception",
    "remove_in_idp",
)


@dataclass(frozen=True)
class CampaignView:
    """Everything known about one campaign, for exports and the bundle."""

    campaign: Campaign
    items: Sequence[Item]
    decisions: Mapping[int, Decision]
    remediations: Mapping[int, Remediation]
    exceptions: Mapping[int, ReviewException]
    scope: str
    on_no_decision: str


def _csv(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in columns})
    return out.getvalue()


def export_rows(view: CampaignView) -> list[dict[str, Any]]:
    """One row per item: the snapshot's fields, its decision and its remediation."""
    rows = []
    for item in view.items:
        decision = view.decisions.get(item.id)
        remediation = view.remediations.get(item.id)
        exception = view.exceptions.get(item.id)
        rows.append(
            {
                **item.row(),
                "decision": decision.decision if decision else None,
                "decided_by": decision.reviewer if decision else None,
                "decided_at": decision.decided_at if decision else None,
                "comment": decision.comment if decision else None,
                "imported_by": decision.imported_by if decision else None,
                "late": decision.late if decision else None,
                "job": remediation.job_id if remediation else None,
                "requested_at": remediation.requested_at if remediation else None,
                "revoked_at": remediation.revoked_at if remediation else None,
                "verified_at": remediation.verified_at if remediation else None,
                "exception": exception.id if exception else None,
                "exception_lifted_at": exception.lifted_at if exception else None,
                "remove_in_idp": exception.memberships if exception else None,
            }
        )
    return rows


def export_csv(view: CampaignView) -> str:
    columns = list(SNAPSHOT_COLUMNS) + [c for c in DECISION_COLUMNS if c not in SNAPSHOT_COLUMNS]
    columns += [c for c in REMEDIATION_COLUMNS if c not in columns]
    return _csv(columns, export_rows(view))


def export_json(view: CampaignView) -> str:
    return json.dumps(
        {"campaign": campaign_json(view), "items": export_rows(view)}, indent=2, sort_keys=False
    )


def campaign_json(view: CampaignView) -> dict[str, Any]:
    """The campaign's fields and its completion counts."""
    counts = completion(view)
    return {**asdict(view.campaign), "scope": view.scope, **counts}


def completion(view: CampaignView) -> dict[str, int]:
    revoke = [i for i in view.items if _decision(view, i.id) == "revoke"]
    return {
        "decided": len(view.decisions),
        "undecided": len(view.items) - len(view.decisions),
        "kept": sum(1 for i in view.items if _decision(view, i.id) == "keep"),
        "revoked": len(revoke),
        "revocations_verified": sum(
            1 for i in revoke if (r := view.remediations.get(i.id)) and r.verified_at
        ),
    }


def _decision(view: CampaignView, item_id: int) -> str | None:
    decision = view.decisions.get(item_id)
    return decision.decision if decision else None


def bundle_files(
    view: CampaignView, sla_csv: str, sla_html: str, period: tuple[str, str]
) -> dict[str, bytes]:
    """Every file of the bundle but the manifest, as bytes."""
    rows = export_rows(view)
    revoked = [r for r in rows if r["decision"] == "revoke"]
    files = {
        "snapshot.csv": _csv(SNAPSHOT_COLUMNS, [i.row() for i in view.items]),
        "snapshot.json": json.dumps([asdict(i) for i in view.items], indent=2) + "\n",
        "decisions.csv": _csv(DECISION_COLUMNS, [r for r in rows if r["decision"]]),
        "remediation.csv": _csv(REMEDIATION_COLUMNS, revoked),
        "sla-report.csv": sla_csv,
        "sla-report.html": sla_html,
        "summary.html": summary_html(view, period),
    }
    return {name: files[name].encode("utf-8") for name in BUNDLE_FILES}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files_digest(files: Mapping[str, str]) -> str:
    """One digest over every file's name and SHA-256: what the bundle's audit row carries."""
    text = "\n".join(f"{digest}  {name}" for name, digest in sorted(files.items()))
    return hashlib.sha256(text.encode()).hexdigest()


def manifest(
    view: CampaignView,
    files: Mapping[str, bytes],
    anchors: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """The manifest: each file's SHA-256 and size, and the audit rows anchoring them.

    ``anchors`` maps ``snapshot`` (the campaign's start) and ``bundle`` (the row recording
    this bundle) to their full audit rows (with ``prev_hash``), so each can be re-hashed."""
    return {
        "campaign": view.campaign.id,
        "snapshot_sha256": view.campaign.snapshot_sha256,
        "files": {
            name: {
                "sha256": sha256(data),
                "bytes": len(data),
                "anchor": "snapshot" if name == "snapshot.json" else "bundle",
            }
            for name, data in files.items()
        },
        "files_sha256": files_digest({n: sha256(d) for n, d in files.items()}),
        "anchors": {name: dict(row) for name, row in anchors.items()},
    }


def _row_problems(name: str, row: Mapping[str, Any]) -> list[str]:
    fields = AuditEntry.__dataclass_fields__
    try:
        values: dict[str, Any] = {k: row.get(k) for k in fields}
        entry = AuditEntry(**values)
        computed = chain_hash(str(row["prev_hash"]), entry)
    except (KeyError, TypeError):
        return [f"anchor {name}: incomplete audit row"]
    if computed != row.get("hash"):
        return [f"anchor {name}: audit row {row.get('seq')} does not match its hash"]
    return []


def verify_bundle(folder: Path) -> list[str]:
    """Every mismatch in the bundle at ``folder`` (empty: it checks out)."""
    try:
        document = json.loads((folder / MANIFEST).read_text("utf-8"))
    except (OSError, ValueError) as exc:
        return [f"{MANIFEST}: cannot read: {exc}"]
    listed = document.get("files") if isinstance(document, dict) else None
    anchors = document.get("anchors") if isinstance(document, dict) else None
    if not isinstance(listed, dict) or not isinstance(anchors, dict):
        return [f"{MANIFEST}: not a manifest of an evidence bundle"]
    problems = [f"{name}: not in the manifest" for name in BUNDLE_FILES if name not in listed]
    digests = {}
    for name, meta in sorted(listed.items()):
        if name not in BUNDLE_FILES:
            problems.append(f"{MANIFEST}: lists {name!r}, which is not a file of a bundle")
            continue
        try:
            data = (folder / name).read_bytes()
        except OSError as exc:
            problems.append(f"{name}: cannot read: {exc.strerror}")
            continue
        digests[name] = sha256(data)
        expected = meta.get("sha256") if isinstance(meta, dict) else None
        if digests[name] != expected:
            problems.append(f"{name}: SHA-256 {digests[name]} differs from the manifest's")
    for name in ("snapshot", "bundle"):
        row = anchors.get(name)
        if not isinstance(row, dict):
            problems.append(f"anchor {name}: missing")
        else:
            problems += _row_problems(name, row)
    bundle = anchors.get("bundle")
    detail = str(bundle.get("detail") or "") if isinstance(bundle, dict) else ""
    if files_digest(digests) not in detail:
        problems.append("the bundle's audit row does not carry these files' digest")
    snapshot = str(document.get("snapshot_sha256") or "")
    start = anchors.get("snapshot")
    if not snapshot or snapshot not in (
        str(start.get("detail") or "") if isinstance(start, dict) else ""
    ):
        problems.append("the campaign's audit row does not carry the snapshot's hash")
    problems += _snapshot_problems(folder, snapshot)
    return problems


def _snapshot_problems(folder: Path, expected: str) -> list[str]:
    try:
        raw = json.loads((folder / "snapshot.json").read_text("utf-8"))
        items = [item_from_dict(entry) for entry in raw]
    except (OSError, ValueError, TypeError, KeyError) as exc:
        return [f"snapshot.json: cannot read the items: {exc!r}"]
    if snapshot_digest(items) != expected:
        return ["snapshot.json: the items do not hash to the campaign's snapshot hash"]
    return []


_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; color: #111; margin: 2rem auto;
  max-width: 70rem; padding: 0 1rem; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0; }
th, td { border: 1px solid #bbb; padding: .25rem .5rem; text-align: left; }
th { background: #f0f0f0; } h2 { border-bottom: 1px solid #bbb; }
"""


def _table(headings: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headings)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape('' if c is None else str(c))}</td>" for c in row) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def summary_html(view: CampaignView, period: tuple[str, str]) -> str:
    """The page an auditor reads first: scope, period, reviewers, completion, revocations."""
    campaign = view.campaign
    counts = completion(view)
    reviewers: dict[str, list[int]] = {}
    for item in view.items:
        entry = reviewers.setdefault(item.reviewer or "(unassigned)", [0, 0])
        entry[0] += 1
        entry[1] += int(item.id in view.decisions)
    rows = export_rows(view)
    facts = [
        ("Campaign", campaign.id),
        ("Scope", view.scope),
        ("Snapshot taken", campaign.started_at),
        ("Deadline", campaign.deadline),
        ("Period of the SLA report", f"{period[0]} to {period[1]}"),
        ("Items", campaign.items),
        ("Decided", counts["decided"]),
        ("Undecided", counts["undecided"]),
        ("Kept", counts["kept"]),
        ("Revoked", counts["revoked"]),
        ("Revocations verified", f"{counts['revocations_verified']} of {counts['revoked']}"),
        ("Without a decision at the deadline", view.on_no_decision),
        ("Snapshot SHA-256", campaign.snapshot_sha256),
        ("Anchored in audit row", campaign.audit_seq),
    ]
    sections = [
        f"<h1>Access review {escape(campaign.id)}</h1>",
        _table(("", ""), facts),
        "<h2>Reviewers</h2>",
        _table(
            ("Reviewer", "Items", "Decided"),
            [(name, n, d) for name, (n, d) in sorted(reviewers.items())],
        ),
        "<h2>Revocations</h2>",
        _table(
            ("Item", "Target", "Role", "User", "Revoked", "Verified", "Remove in the IdP"),
            [
                (
                    r["item_id"],
                    r["target"],
                    r["role"],
                    r["user"],
                    r["revoked_at"],
                    r["verified_at"] or "not yet",
                    r["remove_in_idp"],
                )
                for r in rows
                if r["decision"] == "revoke"
            ],
        ),
        "<h2>Undecided items</h2>",
        _table(
            ("Item", "Target", "Role", "User", "Reviewer"),
            [
                (r["item_id"], r["target"], r["role"], r["user"], r["reviewer"])
                for r in rows
                if not r["decision"]
            ],
        ),
    ]
    title = f"Access review {campaign.id}"
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
        + "\n".join(sections)
        + "\n</main>\n</body>\n</html>\n"
    )
