"""The credentials file and its checker, in-process: the format, labels of plaintext lines,
fingerprints, and the bounded, invalidated memory of Basic checks."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest

from jmlsync.scim import auth as auth_module
from jmlsync.scim.auth import BearerAuth, TokenFileError, read_credentials_file
from jmlsync.scim.credentials import (
    CredentialsError,
    find,
    new_basic,
    new_bearer,
    parse_credentials,
    password_matches,
)

TOKEN = "t0-" + "a" * 40


def _write(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    path.chmod(0o600)
    return path


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_plaintext_lines_get_the_labels_other_lines_leave_free(tmp_path: Path) -> None:
    hashed, _ = new_bearer("default", "2026-12-01T00:00:00Z")
    text = "\n".join([TOKEN, "# a comment", "", hashed.line(), "t1-" + "b" * 40])
    credentials = parse_credentials(tmp_path / "tokens", text)
    assert [(c.label, c.plaintext) for c in credentials] == [
        ("default-2", True),
        ("default", False),
        ("default-3", True),
    ]
    # A bearer token's fingerprint is the start of its SHA-256, the same before and after.
    assert credentials[0].fingerprint == hashlib.sha256(TOKEN.encode()).hexdigest()[:12]
    assert find(credentials, credentials[2].fingerprint[:6]) == credentials[2]
    assert find(credentials, "default-3") == credentials[2]
    assert find(credentials, "abc") is None


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("bearer okta sha256:abc -", "64 hex digits"),
        ("basic ping ping sha256:abc -", "scrypt"),
        ("bearer bad/label sha256:" + "0" * 64 + " -", "bad label"),
        ("short", "shorter than 16"),
        ("bearer", "not a token"),
    ],
)
def test_a_malformed_line_is_named_with_its_number(tmp_path: Path, line: str, reason: str) -> None:
    with pytest.raises(CredentialsError) as caught:
        parse_credentials(tmp_path / "tokens", "# header\n" + line)
    assert ":2:" in str(caught.value)
    assert reason in str(caught.value)


def test_labels_are_unique(tmp_path: Path) -> None:
    one, _ = new_bearer("okta", "-")
    two, _ = new_bearer("okta", "-")
    with pytest.raises(CredentialsError, match="used twice"):
        parse_credentials(tmp_path / "tokens", one.line() + "\n" + two.line())


def test_scrypt_checks_the_password() -> None:
    credential, password = new_basic("ping", "-")
    assert password_matches(password.encode(), credential.digest)
    assert not password_matches(b"wrong", credential.digest)
    assert not password_matches(password.encode(), "scrypt:bad")


async def test_basic_checks_are_remembered_bounded_and_forgotten_on_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ping, password = new_basic("ping", "-")
    path = _write(tmp_path / "tokens", TOKEN, ping.line())
    checker = BearerAuth(path, recheck_seconds=0)
    calls: list[bytes] = []
    real = auth_module.password_matches

    def counted(candidate: bytes, digest: str) -> bool:
        calls.append(candidate)
        return real(candidate, digest)

    monkeypatch.setattr(auth_module, "password_matches", counted)
    good = _basic("ping", password)
    assert (await checker.identify(good)) == ping
    assert (await checker.identify(good)) == ping
    assert len(calls) == 1  # the second from memory
    assert await checker.identify(_basic("ping", "wrong")) is None  # failures never remembered
    assert await checker.identify(_basic("ping", "wrong")) is None
    assert len(calls) == 3
    assert await checker.identify(_basic("nobody", password)) is None
    assert len(calls) == 3  # no user, no scrypt
    assert checker.basic_enabled
    # A bearer token in a Basic header, or a Basic credential in a Bearer one, is refused.
    assert await checker.identify(_basic("default", TOKEN)) is None
    assert await checker.identify(f"Bearer {password}") is None
    assert await checker.identify("Basic %%%") is None
    # The file changes (the credential revoked): the memory goes with it.
    _write(path, TOKEN)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert await checker.identify(good) is None
    assert not checker.basic_enabled


async def test_the_memory_of_basic_checks_is_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth_module, "BASIC_CACHE_SIZE", 2)
    made = [new_basic(f"ping-{i}", "-") for i in range(3)]
    checker = BearerAuth(_write(tmp_path / "tokens", *(c.line() for c, _ in made)))
    calls: list[bytes] = []
    real = auth_module.password_matches

    def counted(candidate: bytes, digest: str) -> bool:
        calls.append(candidate)
        return real(candidate, digest)

    monkeypatch.setattr(auth_module, "password_matches", counted)
    headers = [_basic(c.label, password) for c, password in made]
    for header in headers:
        assert await checker.identify(header) is not None
    assert len(calls) == 3
    assert await checker.identify(headers[2]) is not None  # the newest, remembered
    assert len(calls) == 3
    assert await checker.identify(headers[0]) is not None  # the oldest, forgotten
    assert len(calls) == 4


def test_a_file_with_only_comments_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "tokens", "# nothing")
    with pytest.raises(TokenFileError, match="no token"):
        read_credentials_file(path)
