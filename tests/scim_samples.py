"""SCIM constants and the recorded request and response samples under ``tests/samples``.

The URNs are written out here, not imported from jmlsync, so that a test's expected value
never comes from the code under test.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"

SAMPLES = Path(__file__).parent / "samples"


def patch_op(*operations: dict[str, Any]) -> dict[str, Any]:
    """A PatchOp request body of ``operations``."""
    return {"schemas": [PATCH_OP], "Operations": list(operations)}


@cache
def _load(name: str) -> Any:
    return json.loads((SAMPLES / f"{name}.json").read_text())


def sample(name: str) -> Any:
    """A fresh copy of ``tests/samples/<name>.json`` (a test may change what it gets)."""
    return json.loads(json.dumps(_load(name)))


#: Whose PATCH bodies ``tests/samples/patch-<resource>-<source>.json`` hold: what Okta and
#: Entra ID send, then the RFC 7644 forms no IdP in particular is known for.
PATCH_SOURCES = ("okta", "entra", "rfc7644")


def patch_cases(resource: str) -> list[tuple[str, dict[str, Any]]]:
    """Each recorded PATCH of a ``resource`` ("user" or "group"): its name and the case, with
    ``resource`` (the stored document), ``request`` (the body sent), ``expected`` (the
    document after it) and, for groups, ``members`` (the membership operations, in order)."""
    cases: list[tuple[str, dict[str, Any]]] = []
    for source in PATCH_SOURCES:
        cases.extend(sample(f"patch-{resource}-{source}").items())
    return cases
