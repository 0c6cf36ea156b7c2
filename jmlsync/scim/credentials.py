"""The credentials file: the bearer tokens and HTTP Basic passwords an IdP presents, stored
hashed, one a line.

A line is one of::

    bearer LABEL sha256:HEX CREATED
    basic LABEL USERNAME scrypt:N:R:P:SALT:HASH CREATED

and any other line (not blank, not a ``#`` comment) is a plaintext bearer token, the format
this file had before it was hashed: such lines keep working, are labelled ``default``,
``default-2``... by position, and ``jmlsync token migrate`` rewrites them hashed.

A bearer token is 256 random bits, so one SHA-256 over it cannot be reversed or guessed and
needs no salt or slow hash; a Basic password is hashed with scrypt because an operator may
choose it, or reuse one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

#: scrypt cost: 16 MiB and some 50 ms a verification (the OWASP minimum for scrypt).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024
LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
HEADER = "# jmlsync credentials: written by `jmlsync token`; every line is valid (rotation)\n"


class CredentialsError(Exception):
    """The credentials file is missing, unreadable, malformed or holds no credential."""


@dataclass(frozen=True)
class Credential:
    """One accepted credential: a bearer token's SHA-256 or a Basic password's scrypt hash."""

    kind: str  # "bearer" or "basic"
    label: str
    digest: str  # "sha256:HEX" or "scrypt:N:R:P:SALT:HASH"
    created: str = "-"
    username: str | None = None
    #: Set for a line still in plaintext (not yet migrated).
    plaintext: bool = False
    #: The line of the file it was read from (0 for a new one).
    number: int = field(default=0, compare=False)

    @property
    def fingerprint(self) -> str:
        """12 hex digits that name the credential without revealing it.

        A bearer token's fingerprint is the start of its SHA-256, so the holder of a token
        finds its entry with ``printf %s "$TOKEN" | sha256sum | cut -c1-12``.
        """
        if self.kind == "bearer":
            return self.digest.removeprefix("sha256:")[:12]
        return hashlib.sha256(self.digest.encode()).hexdigest()[:12]

    def line(self) -> str:
        """The credential as a line of the file (hashed, whatever it was read as)."""
        if self.kind == "bearer":
            return f"bearer {self.label} {self.digest} {self.created}"
        return f"basic {self.label} {self.username} {self.digest} {self.created}"


def token_digest(token: bytes) -> str:
    """The stored form of a bearer token."""
    return "sha256:" + hashlib.sha256(token).hexdigest()


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def password_digest(password: str) -> str:
    """The stored form of a Basic password: scrypt with a fresh 16-byte salt."""
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, maxmem=_SCRYPT_MAXMEM
    )
    return f"scrypt:{SCRYPT_N}:{SCRYPT_R}:{SCRYPT_P}:{_b64(salt)}:{_b64(key)}"


def password_matches(password: bytes, digest: str) -> bool:
    """True when ``password`` hashes to ``digest`` (compared in constant time). Slow."""
    try:
        _, n, r, p, salt, key = digest.split(":")
        expected = base64.b64decode(key)
        derived = hashlib.scrypt(
            password,
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=_SCRYPT_MAXMEM,
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(derived, expected)


def _plaintext_label(taken: set[str]) -> str:
    """The first free one of default, default-2...: the labels plaintext tokens get, by
    position, and keep when they are migrated."""
    number = 1
    while (label := "default" if number == 1 else f"default-{number}") in taken:
        number += 1
    return label


def _parse(path: Path, number: int, line: str, taken: set[str]) -> Credential:
    fields = line.split()
    where = f"{path}:{number}"
    if fields[0] == "bearer" and len(fields) == 4:
        _, label, digest, created = fields
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            raise CredentialsError(f"{where}: a bearer line needs sha256: and 64 hex digits")
    elif fields[0] == "basic" and len(fields) == 5:
        _, label, username, digest, created = fields
        if not digest.startswith("scrypt:") or digest.count(":") != 5:
            raise CredentialsError(f"{where}: a basic line needs an scrypt: hash")
        return Credential("basic", _label(where, label), digest, created, username, False, number)
    elif len(fields) == 1 and fields[0] not in ("bearer", "basic"):
        token = line.strip()
        if len(token) < 16:
            raise CredentialsError(f"{where}: a token is shorter than 16 characters")
        digest = token_digest(token.encode())
        label = _plaintext_label(taken)
        return Credential("bearer", label, digest, plaintext=True, number=number)
    else:
        raise CredentialsError(f"{where}: not a token nor a 'bearer'/'basic' line")
    return Credential("bearer", _label(where, label), digest, created, number=number)


def _label(where: str, label: str) -> str:
    if not LABEL.fullmatch(label):
        raise CredentialsError(f"{where}: bad label {label!r}")
    return label


def parse_credentials(path: Path, text: str) -> tuple[Credential, ...]:
    """Every credential in ``text`` (the content of ``path``), in file order."""
    lines = [
        (number, line)
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    # Labelled lines first, so a plaintext token's label never takes one a later line has.
    taken = {line.split()[1] for _, line in lines if len(line.split()) > 2}
    found: list[Credential] = []
    for number, line in lines:
        credential = _parse(path, number, line, taken)
        if any(c.label == credential.label for c in found):
            raise CredentialsError(f"{path}:{number}: label {credential.label!r} used twice")
        taken.add(credential.label)
        found.append(credential)
    return tuple(found)


def read_credentials(path: Path) -> tuple[Credential, ...]:
    """The credentials in ``path`` (possibly none); raises CredentialsError when unreadable."""
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return ()
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialsError(f"{path}: cannot read tokens file: {exc}") from exc
    return parse_credentials(path, text)


def edit_credentials(path: Path, lines: dict[int, str | None], append: str | None = None) -> None:
    """Rewrite ``path`` atomically (mode 0600): line ``n`` replaced by ``lines[n]`` (dropped
    when None), ``append`` added at the end; comments and every other line kept as they are."""
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        text = HEADER
    kept = []
    for number, line in enumerate(text.splitlines(), start=1):
        new = lines.get(number, line)
        if new is not None:
            kept.append(new + "\n")
    if append is not None:
        kept.append(append + "\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("".join(kept))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def new_bearer(label: str, created: str) -> tuple[Credential, str]:
    """A fresh bearer credential and its token (256 random bits, URL-safe)."""
    token = secrets.token_urlsafe(32)
    return Credential("bearer", label, token_digest(token.encode()), created), token


def new_basic(label: str, created: str) -> tuple[Credential, str]:
    """A fresh Basic credential (the username is the label) and its password."""
    password = secrets.token_urlsafe(32)
    return Credential("basic", label, password_digest(password), created, label), password


def find(credentials: Iterable[Credential], name: str) -> Credential | None:
    """The credential with this label, or whose fingerprint starts with ``name`` (6+ digits)."""
    items = tuple(credentials)
    for credential in items:
        if credential.label == name:
            return credential
    if len(name) >= 6:
        matches = [c for c in items if c.fingerprint.startswith(name.lower())]
        if len(matches) == 1:
            return matches[0]
    return None
