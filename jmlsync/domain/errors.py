"""Errors the store and the engine raise; adapters translate them (the SCIM layer into 4xx)."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error the core raises on purpose."""


class ResourceNotFound(DomainError):
    """No user or group with that id."""


class DuplicateUserName(DomainError):
    """Another user already has this userName (compared case-insensitively)."""


class VersionMismatch(DomainError):
    """The resource changed since the version the client named (If-Match)."""


class InvalidFilterError(DomainError):
    """A filter (or sort) the store cannot run: an attribute it cannot filter on, a value it
    cannot compare with. The SCIM layer answers it as ``invalidFilter``."""


class UnknownMembers(DomainError):
    """A membership names users that do not exist."""

    def __init__(self, ids: list[str]) -> None:
        shown = ", ".join(sorted(ids)[:5]) + (" ..." if len(ids) > 5 else "")
        super().__init__(f"no user with id {shown}")
        self.ids = ids


class TargetError(DomainError):
    """A target refused or failed an operation."""


class TransientTargetError(TargetError):
    """Worth retrying: throttling, 5xx, timeouts, resets. ``retry_after`` in seconds, if told."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentTargetError(TargetError):
    """Retrying will not help: denied, invalid role, unknown account."""


class StoreUnavailable(DomainError):
    """The store cannot take the write (or answer) now: disk full, I/O error, database
    locked, connection lost, timeout. Nothing of the write was applied; retrying later may
    succeed, ``retry_after`` seconds from now being a sensible first wait."""

    def __init__(self, message: str, *, retry_after: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ConfigError(Exception):
    """A configuration problem, with the file, the key and the reason in its message."""
