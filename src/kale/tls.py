"""The manager's TLS certificate, and how clients and workers pin it.

Every TCP listener of a manager speaks TLS with a self-signed certificate made at its first
start: ``$KALE_HOME/tls/manager.crt`` and its key ``manager.key`` (0600, in the 0700
home). It is kept across restarts, so whoever holds it (a client of the home, a batch
worker that was given it, another user told it with their token) can go on trusting the
manager wherever it listens next. A client verifies the server against exactly that
certificate, the only trust anchor of its TLS context, before any token is sent: a process
of another user that took the manager's port cannot answer that handshake, having no key.

Local clients and workers (same host, same user) do not use TCP at all: they reach the
manager through the Unix socket ``$KALE_HOME/manager.sock`` (0600), which nobody else can
open (see :func:`unix_path`).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import functools
import hashlib
import ipaddress
import os
import socket
import ssl
from pathlib import Path
from typing import Any

from kale.config import write_private
from kale.errors import KaleError

TLS_DIR = "tls"
CERT_FILE = "manager.crt"
KEY_FILE = "manager.key"
SOCKET_FILE = "manager.sock"
#: the certificate lives this long: the pin must outlive every batch job and restart
VALIDITY_DAYS = 3650
#: a certificate given in the environment (batch workers): PEM, one-line base64 DER, or a
#: file holding either
CERT_ENV = "KALE_MANAGER_CERT"


def cert_path(home: Path) -> Path:
    return home / TLS_DIR / CERT_FILE


def key_path(home: Path) -> Path:
    return home / TLS_DIR / KEY_FILE


def socket_path(home: Path) -> Path:
    return home / SOCKET_FILE


def ensure_cert(home: Path, host: str) -> Path:
    """The home's certificate, made (ECDSA P-256, self-signed) if there is none yet or the
    one there cannot be used. Never replaced otherwise, whatever ``host`` is: the pin stays
    valid across restarts (the clients do not match host names, see
    :func:`client_context`). Returns its path."""
    crt, key = cert_path(home), key_path(home)
    if crt.exists() and key.exists() and _usable(crt, key):
        return crt
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    (home / TLS_DIR).mkdir(mode=0o700, exist_ok=True)
    os.chmod(home / TLS_DIR, 0o700)
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Kale manager"),
                      x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, str(home)[-64:])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(private.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=VALIDITY_DAYS))
            .add_extension(x509.SubjectAlternativeName(_names(host)), critical=False)
            # its own trust anchor: a CA of itself alone (pathlen 0), and a server
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(private, hashes.SHA256()))
    write_private(key, private.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    write_private(crt, cert.public_bytes(serialization.Encoding.PEM))
    return crt


def _usable(crt: Path, key: Path) -> bool:
    """The pair loads, belongs together and has more than a day to live."""
    try:
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(crt.read_bytes())
        left = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
        if left < datetime.timedelta(days=1):
            return False
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(crt, key)
    except (OSError, ValueError, ssl.SSLError):
        return False
    return True


def _names(host: str) -> list[Any]:
    """SANs: the listening address, this host's names and its addresses, loopback."""
    from cryptography import x509

    dns = {"localhost", socket.gethostname(), socket.getfqdn()}
    ips = {"127.0.0.1", "::1"}
    if host in ("0.0.0.0", "::", ""):
        with contextlib.suppress(OSError):
            ips.update(str(a[4][0]) for a in socket.getaddrinfo(socket.gethostname(), None))
    else:
        try:
            ipaddress.ip_address(host)
            ips.add(host)
        except ValueError:
            dns.add(host)
    names: list[Any] = [x509.DNSName(d) for d in sorted(dns) if d]
    names += [x509.IPAddress(ipaddress.ip_address(i.split("%")[0])) for i in sorted(ips)]
    return names


def fingerprint(pem: str) -> str:
    """``sha256:`` and the hex SHA-256 of the certificate's DER bytes."""
    return "sha256:" + hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


def one_line(pem: str) -> str:
    """The certificate as one line (base64 DER): safe in an environment variable of a
    batch job's script."""
    return base64.b64encode(ssl.PEM_cert_to_DER_cert(pem)).decode()


def load_pin(value: str | Path) -> str:
    """A pinned certificate as PEM, from PEM text, one-line base64 DER (:func:`one_line`)
    or a file holding either. A :class:`KaleError` if it is none of these."""
    text = str(value).strip()
    where = ""
    if "-----BEGIN" not in text and (isinstance(value, Path) or text.startswith(("/", "~", "."))
                                     or os.path.exists(os.path.expanduser(text))):
        where = os.path.expanduser(text)
        try:
            text = Path(where).read_text().strip()
        except (OSError, UnicodeDecodeError) as e:
            raise KaleError(f"cannot read the manager's certificate {where}: "
                            f"{getattr(e, 'strerror', None) or e}") from None
    try:
        if "-----BEGIN CERTIFICATE-----" in text:
            der = ssl.PEM_cert_to_DER_cert(text[text.index("-----BEGIN CERTIFICATE-----"):])
        else:
            der = base64.b64decode("".join(text.split()), validate=True)
        pem = ssl.DER_cert_to_PEM_cert(der)
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=pem)
    except (ValueError, ssl.SSLError):
        raise KaleError(f"{where or 'the certificate given'} is not a PEM certificate "
                        "(the manager's is $KALE_HOME/tls/manager.crt on its host)") from None
    return pem


def client_context(pem: str) -> ssl.SSLContext:
    """A TLS client context that trusts the pinned certificate and nothing else.

    Host names are not checked: the pin is stronger than a name. Only the holder of the
    pinned certificate's private key (the 0600 key in the manager's home) can complete the
    handshake, whatever address it is reached at; and managers are reached at addresses
    no certificate could list in advance (the local end of an SSH tunnel, a port forward,
    an interface added after the first start, which the kept certificate never names)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=pem)
    return ctx


def server_context(home: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_path(home), key_path(home))
    return ctx


class NotTheManager(KaleError):
    """The server at a manager's address failed the pin: no token was sent to it."""

    def __init__(self, url: str, pinned: str, why: BaseException | str) -> None:
        text = str(why)
        if "CERTIFICATE_VERIFY_FAILED" in text or isinstance(why, ssl.SSLCertVerificationError):
            how = f"its TLS certificate does not match the one pinned in {pinned}"
        else:
            how = f"it did not complete a TLS handshake with the certificate pinned in " \
                  f"{pinned}: {text}"
        super().__init__(f"the server at {url} is not this home's manager ({how}); "
                         "no token was sent")


def tls_failure(exc: BaseException) -> BaseException | None:
    """The TLS error behind ``exc`` (its causes and contexts), if there is one."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, ssl.SSLError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


# -- the Unix socket ------------------------------------------------------------------------
_dirs: dict[str, int] = {}


def unix_path(path: Path) -> str:
    """A path for ``bind``/``connect`` of the Unix socket ``path``. Socket paths are
    limited to 107 bytes; a longer one is reached through ``/proc/self/fd`` and a
    descriptor of its directory, kept open for this process's life."""
    text = str(path)
    if len(os.fsencode(text)) < 100:
        return text
    parent = str(path.parent)
    fd = _dirs.get(parent)
    if fd is None:
        fd = _dirs[parent] = os.open(parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    return f"/proc/self/fd/{fd}/{path.name}"


def owned_pool(uds: str | None = None, ssl_context: ssl.SSLContext | None = None) -> Any:
    """An httpcore connection pool (for an httpx transport's ``_pool``), to the Unix
    socket ``uds`` or over TCP with ``ssl_context``, that owns its sockets, which httpcore
    1.0's own does not quite:

    - a connect that fails closes its socket at once (httpcore leaves it to the garbage
      collector: a ResourceWarning per attempt while a manager restarts);
    - closing the pool shuts down every socket it opened, in use or not (a thread
      reading a stream, a run's events, returns at once);
    - a connect (or a TLS handshake) that was under way when the pool was closed (another
      thread's request) fails and closes its socket (httpcore would have handed the
      request a connection that no one closes any more).

    Its limits are httpx's defaults (100 connections, 20 kept alive for 5 s): each thread
    that follows a run's events holds one."""
    import httpcore

    limits: dict[str, Any] = {"max_connections": 100, "max_keepalive_connections": 20,
                              "keepalive_expiry": 5.0}
    try:
        backend = _owning_backend()()
    except ImportError:  # another httpcore: its own pool
        return httpcore.ConnectionPool(uds=uds, ssl_context=ssl_context, **limits)
    return _owning_pool()(uds=uds, ssl_context=ssl_context, network_backend=backend,
                          **limits)


@functools.cache
def _owning_pool() -> type:
    """httpcore's pool, whose ``close`` first shuts the sockets of its backend (one of
    :func:`_owning_backend`'s; see :func:`owned_pool`); made once."""
    import httpcore

    class Pool(httpcore.ConnectionPool):
        """Threads: as httpcore's own (any, under its lock)."""

        def close(self) -> None:
            self._network_backend.close()  # type: ignore[attr-defined]
            super().close()

    return Pool


@functools.cache
def _owning_stream() -> type:
    """httpcore's stream, whose TLS stream (made by its ``start_tls``) its backend keeps
    too (see :func:`owned_pool`)."""
    from httpcore._backends.sync import SyncStream

    class Stream(SyncStream):
        """Used by the thread of the request that opened it."""

        def __init__(self, sock: socket.socket, backend: Any) -> None:
            super().__init__(sock)
            self.backend = backend

        def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                      timeout: float | None = None) -> Any:
            tls_stream = super().start_tls(ssl_context, server_hostname, timeout)
            return self.backend.keep(tls_stream, server_hostname or "the manager")

    return Stream


@functools.cache
def _owning_backend() -> type:
    """httpcore's synchronous backend, which keeps the streams it opened until its
    ``close`` (see :func:`owned_pool`); made once, when a client is first made."""
    import threading
    import weakref

    import httpcore

    stream_class = _owning_stream()

    class Backend(httpcore.SyncBackend):
        """Used by whichever thread uses the pool."""

        def __init__(self) -> None:
            self._lock = threading.Lock()
            self._open: weakref.WeakSet[Any] = weakref.WeakSet()
            self.closed = False

        def connect_unix_socket(self, path: str, timeout: float | None = None,
                                socket_options: Any = None) -> Any:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                for option in socket_options or ():
                    sock.setsockopt(*option)
                sock.settimeout(timeout)
                sock.connect(path)
            except TimeoutError as e:
                sock.close()
                raise httpcore.ConnectTimeout(e) from e
            except OSError as e:
                sock.close()
                raise httpcore.ConnectError(e) from e
            return self.keep(stream_class(sock, self), path)

        def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                        local_address: str | None = None, socket_options: Any = None) -> Any:
            plain = super().connect_tcp(host, port, timeout, local_address, socket_options)
            return self.keep(stream_class(plain.get_extra_info("socket"), self),
                             f"{host}:{port}")

        def keep(self, stream: Any, where: str) -> Any:
            """``stream``, kept until :meth:`close`; or closed, if that came first."""
            with self._lock:
                if not self.closed:
                    self._open.add(stream)
                    return stream
            stream.close()
            raise httpcore.ConnectError(f"{where}: the client was closed")

        def close(self) -> None:
            with self._lock:
                self.closed = True
                streams = list(self._open)
            for stream in streams:
                sock = stream.get_extra_info("socket")
                # (socket's own shutdown: an SSLSocket's would drop its TLS state under a
                # thread that reads it; a socket given over to TLS has no descriptor left)
                with contextlib.suppress(OSError):  # (wakes a thread that reads it)
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
                stream.close()

    return Backend
