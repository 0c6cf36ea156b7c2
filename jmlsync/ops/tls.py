"""TLS in the process: TLS 1.2 and later, modern ciphers, the certificate reloaded on change.

The server socket's context checks the certificate and key files' modification times at every
new connection (two ``stat`` calls); when either changed, a fresh context is loaded from them
and given to that connection and the ones after it. A renewed certificate (certbot, cert-manager
updating a Secret volume) is thus served without a restart, and a broken pair keeps the last
good one.
"""

from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path

log = logging.getLogger("jmlsync.tls")


class TlsFileError(Exception):
    """The certificate or the key cannot be read or do not form a pair."""


def _context(certificate: Path, key: Path) -> ssl.SSLContext:
    """A server context with the chain and key loaded, refusing anything below TLS 1.2."""
    # Python's server defaults: its modern cipher list (forward-secret AEAD only for TLS 1.2),
    # no compression, no renegotiation.
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    for path in (certificate, key):
        # load_cert_chain does not say which file it could not open.
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            raise TlsFileError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        context.load_cert_chain(certificate, key)
    except ssl.SSLError as exc:
        raise TlsFileError(
            f"{certificate} and {key}: not a PEM certificate chain and its private key"
            f" ({exc.reason or exc})"
        ) from exc
    except OSError as exc:  # replaced between the check above and the load
        raise TlsFileError(f"{certificate} or {key}: cannot read: {exc.strerror}") from exc
    return context


class ReloadingTls:
    """The server's SSL context, following changes of the certificate and key files."""

    def __init__(self, certificate: Path, key: Path) -> None:
        self._certificate = certificate
        self._key = key
        self._stamp = self._stamps()
        self.context = _context(certificate, key)
        self._current = self.context
        self.context.sni_callback = self._on_hello

    def _stamps(self) -> tuple[int | None, int | None]:
        def mtime(path: Path) -> int | None:
            try:
                return os.stat(path).st_mtime_ns
            except OSError:
                return None

        return mtime(self._certificate), mtime(self._key)

    def current(self) -> ssl.SSLContext:
        """The context for a new connection: reloaded first when a file changed."""
        stamp = self._stamps()
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self._current = _context(self._certificate, self._key)
            except TlsFileError as exc:
                log.error("keeping the previous TLS certificate: %s", exc)
            else:
                log.info("reloaded the TLS certificate from %s", self._certificate)
        return self._current

    def _on_hello(
        self, connection: ssl.SSLObject | ssl.SSLSocket, _name: str | None, _ctx: ssl.SSLContext
    ) -> None:
        # Called for every ClientHello, with or without a server name: the one place where
        # a connection can still be given another context.
        context = self.current()
        if context is not self.context:
            connection.context = context
