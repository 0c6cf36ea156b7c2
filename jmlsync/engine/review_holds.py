"""What review decisions take out of a plan: ``desired = rules - review exceptions``, and the
grants to revoke wherever a target holds them (``withheld``)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from jmlsync.domain.access import Grant, Reason, Rule, UserState
from jmlsync.domain.policy import grant_causes, without_exceptions
from jmlsync.domain.review_records import ReviewException
from jmlsync.ports import ReviewHolds


@dataclass(frozen=True)
class Held:
    """Desired grants after review exceptions, what to revoke, and the exceptions holding."""

    desired: dict[Grant, Reason]
    withheld: frozenset[Grant] = frozenset()
    exceptions: tuple[ReviewException, ...] = field(default=())


@dataclass(frozen=True)
class Holds:
    """The review exceptions and pending revocations of some users, read once for a batch
    of pipeline jobs; :meth:`of` narrows them to one user as the store narrows by name."""

    exceptions: tuple[ReviewException, ...] = ()
    pending: frozenset[Grant] = frozenset()

    def of(self, user_name: str) -> Holds:
        key = user_name.casefold()
        return Holds(
            tuple(e for e in self.exceptions if e.grant.user.casefold() == key),
            frozenset(g for g in self.pending if g.user.casefold() == key),
        )


async def read_holds(holds: ReviewHolds | None, user_names: Collection[str]) -> Holds:
    """The exceptions and pending revocations of ``user_names``, in two reads."""
    if holds is None or not user_names:
        return Holds()
    exceptions = await holds.exceptions(user_names)
    pending = await holds.pending_revocations(user_names)
    return Holds(tuple(exceptions), frozenset(pending))


def held_by(
    found: Holds,
    users: Sequence[UserState],
    by_group: Mapping[str, Sequence[Rule]],
    desired: Mapping[Grant, Reason],
) -> Held:
    """:func:`apply_holds` from holds already read (see :func:`read_holds`)."""
    exceptions, pending = found.exceptions, found.pending
    if not exceptions and not pending:
        return Held(dict(desired))
    excepted_users = {e.grant.user.casefold() for e in exceptions}
    causes = grant_causes([u for u in users if u.user_name.casefold() in excepted_users], by_group)
    recorded = {e.grant: e.recorded for e in exceptions}
    kept, held = without_exceptions(desired, causes, recorded)
    # A pending revocation of a grant the rules still give is governed by its exception.
    withheld = held | frozenset(g for g in pending if g not in kept)
    return Held(kept, withheld, tuple(e for e in exceptions if e.grant in held))


async def apply_holds(
    holds: ReviewHolds | None,
    users: Sequence[UserState],
    by_group: Mapping[str, Sequence[Rule]],
    desired: Mapping[Grant, Reason],
    user_names: Collection[str] | None = None,
) -> Held:
    """Take the review exceptions that still hold out of ``desired``; withhold them and the
    revocations decided but not yet read back as gone."""
    if holds is None:
        return Held(dict(desired))
    exceptions = await holds.exceptions(user_names)
    pending = await holds.pending_revocations(user_names)
    return held_by(Holds(tuple(exceptions), frozenset(pending)), users, by_group, desired)
