"""Bearer tokens: read from a file, compared in constant time, several valid at once."""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path


class TokenFileError(Exception):
    """The tokens file is missing, unreadable or holds no token."""


def read_tokens(path: Path) -> tuple[bytes, ...]:
    """Every token in ``path``: one a line; blank lines and ``#`` comments are skipped."""
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise TokenFileError(f"{path}: cannot read tokens file: {exc.strerror}") from exc
    tokens = tuple(
        line.strip().encode()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    if not tokens:
        raise TokenFileError(f"{path}: no token in tokens file")
    short = [t for t in tokens if len(t) < 16]
    if short:
        raise TokenFileError(f"{path}: a token is shorter than 16 characters")
    return tokens


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


class BearerAuth:
    """Checks ``Authorization: Bearer`` headers against the configured tokens."""

    def __init__(self, tokens: tuple[bytes, ...]) -> None:
        self._tokens = tokens

    def allows(self, header: str | None) -> bool:
        """True when the header carries one of the tokens.

        Every token is compared, whatever matched, so the time taken tells nothing about
        which token or how much of it was right.
        """
        if not header:
            return False
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        candidate = presented.strip().encode()
        matched = False
        for token in self._tokens:
            matched |= hmac.compare_digest(candidate, token)
        return matched
