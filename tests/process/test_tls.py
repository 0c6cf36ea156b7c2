"""TLS in the process and trusted proxies, against a real ``jmlsync serve``.

A certificate authority and server certificates are made in the test (``cryptography``); the
clients verify the server against that authority, as an IdP verifies a public one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
import subprocess
import sys
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from jmlsync.ops.forwarded import client_address
from jmlsync.ops.tls import ReloadingTls
from tests.conftest import (
    BASE_PATH,
    TOKENS,
    ServiceProcess,
    start_service,
    stop_service,
    write_config,
)

pytestmark = pytest.mark.timeout(60)

USER = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "ada@example.com"}


@dataclass
class Authority:
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    path: Path

    def issue(self, directory: Path, name: str) -> tuple[Path, Path, bytes]:
        """A server certificate for 127.0.0.1 and localhost: (cert file, key file, DER)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_path.chmod(0o600)
        return cert_path, key_path, certificate.public_bytes(serialization.Encoding.DER)

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.path))


def make_authority(directory: Path) -> Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "jmlsync test CA")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    path = directory / "ca.crt"
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return Authority(key, certificate, path)


@dataclass
class TlsService:
    service: ServiceProcess
    authority: Authority
    certificate: Path
    key: Path
    der: bytes

    @property
    def root(self) -> str:
        return self.service.url.removesuffix(BASE_PATH)


@pytest.fixture
async def tls_service(tmp_path: Path) -> AsyncIterator[TlsService]:
    """``jmlsync serve`` over HTTPS with a certificate from a CA made for the test."""
    authority = make_authority(tmp_path)
    issued, issued_key, der = authority.issue(tmp_path, "first")
    # The files the configuration names; the test replaces them to renew the certificate.
    certificate, key = tmp_path / "server.crt", tmp_path / "server.key"
    issued.rename(certificate)
    issued_key.rename(key)
    config = write_config(
        tmp_path,
        extra="",  # [server] is first in the file: insert the TLS keys there
    )
    text = config.read_text().replace(
        'tokens_file = "tokens"',
        'tokens_file = "tokens"\ntls_certificate_file = "server.crt"\ntls_key_file = "server.key"',
    )
    config.write_text(text)
    running = await start_service(config)
    try:
        yield TlsService(running, authority, certificate, key, der)
    finally:
        await stop_service(running)


async def _peer_certificate(url: str, context: ssl.SSLContext) -> tuple[bytes, str]:
    """The DER certificate and the TLS version a new connection to ``url`` is given."""
    host, port = url.removeprefix("https://").split("/")[0].rsplit(":", 1)
    _, writer = await asyncio.open_connection(host, int(port), ssl=context)
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True)
        return der, ssl_object.version()
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.process
async def test_serves_https_with_a_certificate_the_client_verifies(
    tls_service: TlsService,
) -> None:
    assert tls_service.service.url.startswith("https://127.0.0.1:")
    context = tls_service.authority.client_context()
    headers = {"Authorization": f"Bearer {TOKENS[0]}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.get(tls_service.root + "/healthz", ssl=context) as response:
            assert response.status == 200
        async with session.post(
            tls_service.service.url + "/Users",
            json=USER,
            ssl=context,
            headers={"Content-Type": "application/scim+json"},
        ) as response:
            assert response.status == 201
            body = await response.json()
        # Without public_url the location follows the request: https.
        assert body["meta"]["location"].startswith(tls_service.service.url + "/Users/")
        # Plain HTTP on the TLS port gets no SCIM answer.
        plain = tls_service.root.replace("https://", "http://") + "/healthz"
        with pytest.raises(aiohttp.ClientError):
            async with session.get(plain) as response:
                await response.read()
    # A client that does not trust the authority refuses the server.
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        async with aiohttp.ClientSession() as session:
            await session.get(tls_service.root + "/healthz", ssl=ssl.create_default_context())


@pytest.mark.process
async def test_only_tls_1_2_and_later_are_accepted(tls_service: TlsService) -> None:
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        context = tls_service.authority.client_context()
        context.minimum_version = context.maximum_version = version
        der, negotiated = await _peer_certificate(tls_service.service.url, context)
        assert der == tls_service.der
        assert negotiated == {"TLSv1_2": "TLSv1.2", "TLSv1_3": "TLSv1.3"}[version.name]

    old = tls_service.authority.client_context()
    # OpenSSL 3 allows TLS 1.1 on the client side only at security level 0.
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.1 is, rightly
        old.minimum_version = ssl.TLSVersion.TLSv1_1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, ConnectionResetError)) as refused:
        await _peer_certificate(tls_service.service.url, old)
    assert "NO_PROTOCOLS_AVAILABLE" not in str(refused.value).upper()
    # The control: this client does speak TLS 1.1 here, to a server that allows it.
    assert await _tls_1_1_control(tls_service, old) == "TLSv1.1"


async def _tls_1_1_control(tls_service: TlsService, client: ssl.SSLContext) -> str:
    lenient = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    lenient.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        lenient.minimum_version = ssl.TLSVersion.TLSv1_1
    lenient.load_cert_chain(tls_service.certificate, tls_service.key)

    async def answer(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=lenient)
    async with server:
        port = server.sockets[0].getsockname()[1]
        return (await _peer_certificate(f"https://127.0.0.1:{port}/", client))[1]


@pytest.mark.process
async def test_a_renewed_certificate_is_served_without_a_restart(tls_service: TlsService) -> None:
    context = tls_service.authority.client_context()
    assert (await _peer_certificate(tls_service.service.url, context))[0] == tls_service.der
    renewed, renewed_key, renewed_der = tls_service.authority.issue(
        tls_service.certificate.parent, "renewed"
    )
    # Replace the key before the certificate, as certbot and a Secret update do (atomically).
    renewed_key.replace(tls_service.key)
    renewed.replace(tls_service.certificate)
    assert (await _peer_certificate(tls_service.service.url, context))[0] == renewed_der
    assert any("reloaded the TLS certificate" in line for line in tls_service.service.log)

    # A broken key keeps the certificate that works, and says so.
    tls_service.key.write_text("not a key\n")
    assert (await _peer_certificate(tls_service.service.url, context))[0] == renewed_der
    assert any("keeping the previous TLS certificate" in line for line in tls_service.service.log)


def test_the_context_offers_modern_ciphers_only(tmp_path: Path) -> None:
    authority = make_authority(tmp_path)
    certificate, key, _ = authority.issue(tmp_path, "server")
    context = ReloadingTls(certificate, key).context
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    tls12 = [c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12
    for name in tls12:
        assert name.startswith(("ECDHE-", "DHE-")), name  # forward secrecy
        assert not name.endswith("-SHA"), name  # no SHA-1 MAC
        assert "RC4" not in name
        assert "3DES" not in name
        assert "NULL" not in name


def _serve(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jmlsync", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_a_missing_certificate_stops_the_start_with_one_line(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    config.write_text(
        config.read_text().replace(
            'tokens_file = "tokens"',
            'tokens_file = "tokens"\ntls_certificate_file = "no.crt"\ntls_key_file = "no.key"',
        )
    )
    done = _serve(config)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("jmlsync:")]
    assert lines == [
        f"jmlsync: {tmp_path / 'no.crt'}: cannot read: No such file or directory"
        f" ([server].tls_certificate_file in {config})"
    ]


def test_certificate_and_key_go_together(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    config.write_text(
        config.read_text().replace(
            'tokens_file = "tokens"', 'tokens_file = "tokens"\ntls_certificate_file = "a.crt"'
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "jmlsync", "config", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    assert "server: tls_certificate_file and tls_key_file are set together" in done.stderr


# --- trusted proxies ----------------------------------------------------------------------------

TRUSTED = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1/32")]


@pytest.mark.parametrize(
    ("peer", "header", "expected"),
    [
        ("127.0.0.1", "203.0.113.9", "203.0.113.9"),
        ("127.0.0.1", "198.51.100.7, 203.0.113.9, 10.1.2.3", "203.0.113.9"),
        ("127.0.0.1", "10.1.2.3, 10.4.5.6", "10.1.2.3"),
        ("127.0.0.1", None, "127.0.0.1"),
        ("127.0.0.1", "not-an-address", "127.0.0.1"),
        ("127.0.0.1", "203.0.113.9, ", "127.0.0.1"),
        ("192.0.2.1", "203.0.113.9", "192.0.2.1"),
        ("::ffff:127.0.0.1", "203.0.113.9", "203.0.113.9"),
    ],
)
def test_client_address(peer: str, header: str | None, expected: str) -> None:
    assert client_address(peer, header, TRUSTED) == expected


async def _proxied_service(tmp_path: Path, trusted: str) -> ServiceProcess:
    config = write_config(tmp_path, extra="\n[alerts]\nauth_failures_per_minute = 1\n")
    config.write_text(
        config.read_text().replace(
            'tokens_file = "tokens"', f'tokens_file = "tokens"\ntrusted_proxies = {trusted}'
        )
    )
    return await start_service(config)


FORWARDED = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}


async def _refused_twice_and_created(service: ServiceProcess) -> str:
    """Two refused requests and one created user through a 'proxy'; the user's location."""
    async with aiohttp.ClientSession() as session:
        for _ in range(2):
            headers = {**FORWARDED, "Authorization": "Bearer wrong-token-wrong-token"}
            async with session.get(service.url + "/Users", headers=headers) as response:
                assert response.status == 401
        headers = {
            **FORWARDED,
            "Authorization": f"Bearer {TOKENS[0]}",
            "Content-Type": "application/scim+json",
        }
        async with session.post(service.url + "/Users", json=USER, headers=headers) as response:
            assert response.status == 201
            location: str = (await response.json())["meta"]["location"]
    async with asyncio.timeout(10):
        while not any("ALERT auth_failures" in line for line in service.log):  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # the alert is logged by the other process
    return location


@pytest.mark.process
async def test_forwarded_headers_are_believed_from_a_trusted_proxy(tmp_path: Path) -> None:
    service = await _proxied_service(tmp_path, '["127.0.0.1/32"]')
    try:
        location = await _refused_twice_and_created(service)
    finally:
        await stop_service(service)
    assert location.startswith("https://127.0.0.1:")
    alert = next(line for line in service.log if "ALERT auth_failures" in line)
    assert "latest from 203.0.113.9" in alert


@pytest.mark.process
async def test_forwarded_headers_are_ignored_from_anyone_else(tmp_path: Path) -> None:
    service = await _proxied_service(tmp_path, '["10.0.0.0/8"]')
    try:
        location = await _refused_twice_and_created(service)
    finally:
        await stop_service(service)
    assert location.startswith("http://127.0.0.1:")
    alert = next(line for line in service.log if "ALERT auth_failures" in line)
    assert "latest from 127.0.0.1" in alert
