"""Attributes the schemas do not define: what one request met, and how the service reports it.

An IdP admin can map any attribute to jmlsync (an Entra ``extensionAttribute1``, an Okta app
profile attribute, a custom extension URN). Refusing the whole request for it would also
refuse the deactivation it carries, so by default (``[scim].unknown_attributes = "ignore"``)
such an attribute is dropped, named in the audit row, logged once an hour and counted.
``"store"`` keeps it verbatim instead; ``"reject"`` refuses the request (RFC 7644 allows both).
"""

from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from jmlsync.scim.errors import ScimError

UnknownMode = Literal["ignore", "store", "reject"]

#: The key of a stored doc holding undeclared bare attributes (``store`` mode), by name as sent.
UNRECOGNISED = "urn:jmlsync:params:scim:unrecognised"

#: Longest attribute name reported as sent; longer ones are cut (they come from the client).
NAME_LIMIT = 128
#: Most names one audit row lists; the rest are counted.
AUDIT_NAMES = 20

log = logging.getLogger("jmlsync.scim")


#: Most ignored names one write logs one by one; the rest are counted in one line.
LOG_NAMES = 20
#: What a metric label may hold as sent; any other name counts as ``other``.
_LABEL = re.compile(r"[A-Za-z0-9_.:$\[\]-]{1,128}")


def _shown(name: str) -> str:
    """``name`` fit for a log line, an audit row and a database: cut, with NUL and lone
    surrogates (which JSON allows and UTF-8 and PostgreSQL text do not) escaped."""
    name = name if len(name) <= NAME_LIMIT else name[: NAME_LIMIT - 1] + "…"
    return name.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


@dataclass
class Unknowns:
    """What one request met outside the schemas, and the mode that decides its fate.

    :meth:`meet` raises the given error in ``reject`` mode and otherwise records the name, so
    the code that validates a value calls it where it used to raise.
    """

    mode: UnknownMode = "reject"
    ignored: list[str] = field(default_factory=list)
    stored: list[str] = field(default_factory=list)

    def meet(self, name: str, error: ScimError, *, storable: bool = False) -> bool:
        """Account for the undeclared ``name``; True when the caller should store its value.

        ``storable`` says whether the caller can keep the value (``store`` mode); an
        attribute it cannot keep (an unknown sub-attribute inside a known one) is ignored.
        """
        if self.mode == "reject":
            raise error
        if self.mode == "store" and storable:
            self.stored.append(_shown(name))
            return True
        self.ignored.append(_shown(name))
        return False

    def notes(self) -> tuple[str, ...]:
        """Lines for the audit row of the change: what was ignored, what was kept aside."""
        lines = []
        for verb, names in (("ignored", self.ignored), ("stored unrecognised", self.stored)):
            unique = list(dict.fromkeys(names))
            if unique:
                more = len(unique) - AUDIT_NAMES
                listed = ", ".join(unique[:AUDIT_NAMES]) + (f" and {more} more" if more > 0 else "")
                lines.append(f"{verb} attributes: {listed}")
        return tuple(lines)


def unknown_urn(name: str) -> tuple[str, str] | None:
    """Split an undeclared ``urn:...:Schema:attr`` into (URN, attribute) at the last colon."""
    if not name.lower().startswith("urn:"):
        return None
    urn, _, attribute = name.rpartition(":")
    if not attribute or urn.count(":") < 2:
        return None
    return urn, attribute


def store_unknown(doc: dict[str, Any], name: str, value: Any, *, remove: bool = False) -> None:
    """Keep ``value`` of the undeclared ``name`` in ``doc`` (``store`` mode), or drop it.

    A name qualified by an undeclared URN goes under that URN (an object value for the URN
    alone becomes the whole object); any other name goes into the :data:`UNRECOGNISED` bag.
    """
    existing = next((k for k in doc if k.lower() == name.lower() and k.startswith("urn:")), None)
    if existing is not None and existing != UNRECOGNISED and isinstance(doc[existing], dict):
        holder, key = doc, existing
    elif isinstance(value, dict) and name.lower().startswith("urn:"):
        holder, key = doc, name
    elif (split := unknown_urn(name)) is not None:
        urn, key = split
        known = next((k for k in doc if k.lower() == urn.lower()), urn)
        holder = doc.setdefault(known, {})
        if not isinstance(holder, dict):
            return
    else:
        holder, key = doc.setdefault(UNRECOGNISED, {}), name
    if remove or value is None:
        holder.pop(key, None)
    else:
        holder[key] = value
    for container in (UNRECOGNISED, *(k for k in list(doc) if k.startswith("urn:"))):
        if doc.get(container) == {}:
            del doc[container]


class IgnoredReporter:
    """Logs each ignored name once an hour and counts every one, with bounded state.

    ``count(resource, attribute)`` increments the metric; at most ``max_labels`` distinct
    attribute names are label values, the rest count as ``other`` (a client can send any).
    """

    def __init__(
        self,
        count: Callable[[str, str], None] | None = None,
        count_skipped: Callable[[str, int], None] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        every_seconds: float = 3600.0,
        max_names: int = 1000,
        max_labels: int = 100,
    ) -> None:
        self._count = count
        self._count_skipped = count_skipped
        self._clock = clock
        self._every = every_seconds
        self._max_names = max_names
        self._max_labels = max_labels
        self._logged: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._labels: set[str] = set()

    @property
    def remembered(self) -> int:
        """How many (resource, name) pairs the once-an-hour log keeps (at most max_names)."""
        return len(self._logged)

    def label(self, name: str) -> str:
        """The metric label for ``name``: itself while labels remain, then ``other``; a name
        with characters no attribute name has is ``other`` too."""
        if name in self._labels:
            return name
        if len(self._labels) < self._max_labels and _LABEL.fullmatch(name):
            self._labels.add(name)
            return name
        return "other"

    def report(self, resource: str, names: Iterable[str], *, what: str = "attribute") -> None:
        """Count each of ``names`` and log those not logged within the hour: at most
        :data:`LOG_NAMES` lines for one write (a client can send thousands), then one line
        counting the rest, which stay due for a later write."""
        now = self._clock()
        due = []
        for name in names:
            if self._count is not None:
                self._count(resource, self.label(name))
            last = self._logged.get((resource, name))
            if last is None or now - last >= self._every:
                due.append(name)
        for name in due[:LOG_NAMES]:
            self._logged[(resource, name)] = now
            self._logged.move_to_end((resource, name))
            # Bounded: past max_names the oldest is forgotten (and may be logged again).
            while len(self._logged) > self._max_names:
                self._logged.popitem(last=False)
            log.warning(
                "%s: ignored the undeclared %s %r (logged once an hour)",
                resource,
                what,
                name,
                extra={"fields": {"resource": resource, "ignored": name}},
            )
        if len(due) > LOG_NAMES:
            log.warning(
                "%s: ignored %d more undeclared %s name(s), not logged one by one",
                resource,
                len(due) - LOG_NAMES,
                what,
                extra={"fields": {"resource": resource, "ignored_unlogged": len(due) - LOG_NAMES}},
            )

    def skipped_members(self, resource: str, resource_id: str, ids: Iterable[str]) -> None:
        """Count and log the unknown member ids a write skipped (one line per write)."""
        listed = sorted(ids)
        if not listed:
            return
        if self._count_skipped is not None:
            self._count_skipped(resource, len(listed))
        shown = ", ".join(_shown(i) for i in listed[:AUDIT_NAMES])
        more = len(listed) - AUDIT_NAMES
        log.warning(
            "%s %s: skipped unknown member id(s) %s%s",
            resource,
            resource_id,
            shown,
            f" and {more} more" if more > 0 else "",
            extra={"fields": {"resource": resource, "skipped_members": len(listed)}},
        )
