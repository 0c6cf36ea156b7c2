"""The credentials an IdP presents: bearer tokens and HTTP Basic passwords from the tokens
file (hashed, see :mod:`jmlsync.scim.credentials`), compared in constant time, several valid
at once, the file read again when it changes."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import os
import secrets
import stat
import time
from collections import OrderedDict
from pathlib import Path

from jmlsync.scim.credentials import (
    Credential,
    CredentialsError,
    parse_credentials,
    password_matches,
)

log = logging.getLogger("jmlsync.auth")

#: Successful Basic verifications remembered, so scrypt is not paid on every request.
BASIC_CACHE_SIZE = 256
BASIC_CACHE_SECONDS = 300.0
#: How often the tokens file's modification time is looked at: a rotated or revoked
#: credential takes effect within this long.
RECHECK_SECONDS = 1.0
#: scrypt runs at most this many at once (16 MiB each), off the event loop.
_SCRYPT_SLOTS = 2


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


def read_credentials_file(path: Path, *, private: bool = True) -> tuple[Credential, ...]:
    """Every credential in ``path``; raises TokenFileError when there is none or the file is
    unreadable, malformed or (with ``private``) open to others."""
    if private:
        check_private(path)
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        raise TokenFileError(f"{path}: cannot read tokens file: {reason}") from exc
    try:
        credentials = parse_credentials(path, text)
    except CredentialsError as exc:
        raise TokenFileError(str(exc)) from exc
    if not credentials:
        raise TokenFileError(f"{path}: no token in tokens file")
    return credentials


def read_tokens(path: Path, *, private: bool = True) -> tuple[bytes, ...]:
    """The stored SHA-256 of every bearer token in ``path`` (see read_credentials_file)."""
    return tuple(
        c.digest.encode()
        for c in read_credentials_file(path, private=private)
        if c.kind == "bearer"
    )


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


class BearerAuth:
    """Checks ``Authorization`` headers against the credentials of a tokens file.

    Bearer tokens always; HTTP Basic only when the file holds ``basic`` lines. The file is
    read again when its modification time changes, so a credential is added or retired
    without a restart; the time is looked at once every ``recheck_seconds`` (on the first
    request after them), not on every request. A file that becomes unreadable or empty keeps
    the last good ones.
    """

    def __init__(self, path: Path, *, recheck_seconds: float = RECHECK_SECONDS) -> None:
        self._path = path
        self._where = str(path)
        self._recheck = recheck_seconds
        self._credentials: tuple[Credential, ...] = ()
        self._bearer: tuple[tuple[bytes, Credential], ...] = ()
        self._basic: tuple[Credential, ...] = ()
        self._set(read_credentials_file(path))
        self._stamp = self._mtime()
        self._next_check = time.monotonic() + recheck_seconds
        self._cache: OrderedDict[bytes, tuple[float, Credential]] = OrderedDict()
        self._slots = asyncio.Semaphore(_SCRYPT_SLOTS)
        self._generation = 0
        #: fingerprint -> wall-clock second of the latest accepted request (see last_used).
        self.used: dict[str, float] = {}

    def _set(self, credentials: tuple[Credential, ...]) -> None:
        self._credentials = credentials
        self._bearer = tuple(
            (bytes.fromhex(c.digest.removeprefix("sha256:")), c)
            for c in credentials
            if c.kind == "bearer"
        )
        self._basic = tuple(c for c in credentials if c.kind == "basic")

    @property
    def basic_enabled(self) -> bool:
        """True when the file holds at least one Basic credential."""
        return bool(self._basic)

    @property
    def credentials(self) -> tuple[Credential, ...]:
        """The credentials currently accepted."""
        return self._credentials

    def _mtime(self) -> int | None:
        try:
            return os.stat(self._where).st_mtime_ns
        except OSError:
            return None

    def _refresh(self) -> None:
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + self._recheck
        stamp = self._mtime()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            credentials = read_credentials_file(self._path)
        except TokenFileError as exc:
            log.error("keeping the previous tokens: %s", exc)
        else:
            self._set(credentials)
            # A revoked password must not live on in the cache.
            self._cache.clear()
            self._generation += 1
            log.info("reloaded %d token(s) from %s", len(credentials), self._path)

    def _bearer_match(self, presented: str) -> Credential | None:
        try:
            digest = hashlib.sha256(presented.strip().encode()).digest()
        except UnicodeEncodeError:
            # Bytes that are not UTF-8 arrive as surrogate escapes: no token has them.
            return None
        found = None
        # Every digest is compared, whatever matched, so the time taken tells nothing about
        # which token matched.
        for expected, credential in self._bearer:
            if hmac.compare_digest(digest, expected):
                found = credential
        return found

    def allows(self, header: str | None) -> bool:
        """True when the header carries one of the bearer tokens."""
        if not header:
            return False
        self._refresh()
        scheme, _, presented = header.partition(" ")
        return scheme.lower() == "bearer" and self._bearer_match(presented) is not None

    async def identify(self, header: str | None) -> Credential | None:
        """The credential the header carries (bearer, or Basic when enabled), else None."""
        if not header:
            return None
        self._refresh()
        scheme, _, presented = header.partition(" ")
        scheme = scheme.lower()
        found = None
        if scheme == "bearer":
            found = self._bearer_match(presented)
        elif scheme == "basic" and self._basic:
            found = await self._basic_match(presented.strip())
        if found is not None:
            self.used[found.fingerprint] = time.time()
        return found

    async def _basic_match(self, presented: str) -> Credential | None:
        try:
            raw = base64.b64decode(presented.encode("ascii"), validate=True)
        except (UnicodeEncodeError, binascii.Error):
            return None
        # The cache key is a fast hash of the whole credential, never the password itself.
        key = hashlib.sha256(raw).digest()
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            self._cache.move_to_end(key)
            return hit[1]
        username, colon, password = raw.partition(b":")
        if not colon:
            return None
        candidates = [
            c for c in self._basic if hmac.compare_digest(username, (c.username or "").encode())
        ]
        found = None
        generation = self._generation
        for credential in candidates:
            async with self._slots:
                ok = await asyncio.to_thread(password_matches, password, credential.digest)
            if ok:
                found = credential
        if found is not None and generation == self._generation:
            self._cache[key] = (now + BASIC_CACHE_SECONDS, found)
            while len(self._cache) > BASIC_CACHE_SIZE:
                self._cache.popitem(last=False)
        return found
