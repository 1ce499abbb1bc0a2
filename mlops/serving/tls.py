"""TLS of the inference service: a certificate and key make REST (and gRPC) https, a client
CA makes them mutual (every client must present a certificate that CA signed).

The files are read and checked once at start-up, before any port opens, so a wrong path,
a key that does not match its certificate or a file that is not PEM stops the service
with a message naming the file, instead of failing each handshake later.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path


class TlsError(ValueError):
    """TLS settings or files that cannot be used; the message names which and why."""


@dataclass(frozen=True)
class TlsFiles:
    certfile: Path
    keyfile: Path
    client_ca: Path | None = None  # mutual TLS when set

    def server_context(self) -> ssl.SSLContext:
        """The server's context from the files (TLS 1.2 at least), or a TlsError."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        _readable(self.certfile, "certificate")
        _readable(self.keyfile, "key")
        try:
            context.load_cert_chain(self.certfile, self.keyfile)
        except ssl.SSLError as exc:
            raise TlsError(f"cannot use certificate {self.certfile} with key {self.keyfile}: "
                           f"{exc.reason or exc} (not PEM, or the key is not the "
                           "certificate's)") from None
        if self.client_ca is not None:
            _readable(self.client_ca, "client CA")
            try:
                context.load_verify_locations(cafile=self.client_ca)
            except ssl.SSLError as exc:
                raise TlsError(f"cannot use client CA {self.client_ca}: "
                               f"{exc.reason or exc}") from None
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def pem(self) -> tuple[bytes, bytes, bytes | None]:
        """Certificate chain, key and client CA as PEM bytes (what gRPC takes)."""
        ca = self.client_ca.read_bytes() if self.client_ca else None
        return self.certfile.read_bytes(), self.keyfile.read_bytes(), ca


def tls_files(certfile: Path | None, keyfile: Path | None,
              client_ca: Path | None) -> TlsFiles | None:
    """The TLS settings from the flags (None: plain http), checked as a whole."""
    if certfile is None and keyfile is None:
        if client_ca is not None:
            raise TlsError("--ssl-ca-certs (mutual TLS) needs --ssl-certfile and "
                           "--ssl-keyfile")
        return None
    if certfile is None or keyfile is None:
        raise TlsError("TLS needs both --ssl-certfile and --ssl-keyfile")
    files = TlsFiles(certfile, keyfile, client_ca)
    files.server_context()
    return files


def _readable(path: Path, what: str) -> None:
    try:
        path.read_bytes()
    except OSError as exc:
        raise TlsError(f"cannot read the TLS {what} {path}: {exc.strerror}") from None
