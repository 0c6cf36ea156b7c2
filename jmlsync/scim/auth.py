"""Bearer tokens: read from a file, compared in constant time, several valid at once."""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import stat
from pathlib import Path

log = logging.getLogger("jmlsync.auth")


class TokenFileError(Exception):
    """The tokens file is missing, unreadable or holds no token."""


def check_private(path: Path) -> None:
    """Refuse a tokens file that group or others may read or write.

    A file owned by another account (a Kubernetes secret volume is root's, shared with the
    pod's group) may be group-readable: that is how it reaches us. Raises TokenFileError with
    the fix in its message.
    """
    try:
        status = path.stat()
    except OSError as exc:
        raise TokenFileError(f"{path}: cannot read tokens file: {exc.strerror}") from exc
    ours = status.st_uid == os.geteuid()
    loose = stat.S_IMODE(status.st_mode) & (0o077 if ours else 0o037)
    if loose:
        fix = f"chmod 600 {path}" if ours else f"chmod 640 {path} (or 600)"
        raise TokenFileError(
            f"{path}: tokens file is open to {'group or others' if ours else 'others'}"
            f" (mode {stat.S_IMODE(status.st_mode):04o}): run {fix}"
        )


def read_tokens(path: Path, *, private: bool = True) -> tuple[bytes, ...]:
    """Every token in ``path``: one a line; blank lines and ``#`` comments are skipped.

    With ``private``, the file must pass :func:`check_private` first.
    """
    if private:
        check_private(path)
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
    """Checks ``Authorization: Bearer`` headers against the tokens of a tokens file.

    The file is read again when its modification time changes, so a token is added or retired
    without a restart. A file that becomes unreadable or empty keeps the last good tokens.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._where = str(path)
        self._tokens = read_tokens(path)
        self._stamp = self._mtime()

    def _mtime(self) -> int | None:
        try:
            # os.stat on a str: this runs on every request, so skip pathlib's overhead.
            return os.stat(self._where).st_mtime_ns
        except OSError:
            return None

    def _refresh(self) -> None:
        stamp = self._mtime()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self._tokens = read_tokens(self._path)
        except TokenFileError as exc:
            log.error("keeping the previous tokens: %s", exc)
        else:
            log.info("reloaded %d token(s) from %s", len(self._tokens), self._path)

    def allows(self, header: str | None) -> bool:
        """True when the header carries one of the tokens.

        Every token is compared, whatever matched, so the time taken tells nothing about
        which token or how much of it was right.
        """
        if not header:
            return False
        self._refresh()
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        try:
            candidate = presented.strip().encode()
        except UnicodeEncodeError:
            # Bytes that are not UTF-8 arrive as surrogate escapes: no token has them.
            return False
        matched = False
        for token in self._tokens:
            matched |= hmac.compare_digest(candidate, token)
        return matched
