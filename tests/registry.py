"""Real-registry fixtures: ``docker-registry serve`` processes on free 127.0.0.1 ports.

A pytest plugin (``pytest_plugins = ["tests.registry"]`` in ``tests/conftest.py``).
Independent of the code under test: it imports nothing from ocicore, consumer or publisher.

Session fixtures, each yielding a :class:`RegistryInstance`:

``registry``        anonymous, plain HTTP
``registry_basic``  htpasswd basic auth, user ``tester`` / ``s3cret-basic``
``registry_token``  bearer tokens from :class:`tests.tokenserver.TokenServer` (``token_server``
                    attribute): anonymous pull everywhere; ``tester`` / ``s3cret-token`` gets
                    pull, push and delete
``registry_tls``    anonymous over HTTPS with a test CA (``ca_file``); the server certificate
                    covers 127.0.0.1 and localhost

``registry_factory`` (function scope) starts more registries on demand, e.g. a second one
for copy or mirror tests, and stops them when the test ends.

Every registry stores blobs under ``root_dir`` (deletes enabled) and logs JSON lines to
``log_file``; :meth:`RegistryInstance.access_log` turns them into :class:`LoggedRequest`
records. Registries are shared by the session, so tests use their own repository names
and count requests as deltas (``since=len(instance.access_log())``).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import datetime as dt
import ipaddress
import json
import os
import secrets
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.tokenserver import TokenServer
from tests.tools import require_tool

AuthKind = Literal["anonymous", "basic", "token"]

BASIC_USER, BASIC_PASSWORD = "tester", "s3cret-basic"
TOKEN_USER, TOKEN_PASSWORD = "tester", "s3cret-token"
TOKEN_SERVICE = "test-registry"
TOKEN_ISSUER = "test-token-issuer"

READY_TIMEOUT = 20.0
PROBE_USER_AGENT = "registry-harness-probe"
_START_ATTEMPTS = 3  # a free port can be taken between choosing it and the registry binding it


# -- the access log ------------------------------------------------------------------------
@dataclass(frozen=True)
class LoggedRequest:
    """One request as the registry logged it."""

    method: str
    path: str  # without the query string
    status: int
    query: str = ""
    user: str | None = None
    user_agent: str = ""
    request_id: str = ""


def _logged_status(entry: dict[str, Any]) -> int | None:
    """The HTTP status of a log entry that closes a request, else None.

    distribution 2.8 writes ``response completed`` for 2xx/3xx and ``response completed
    with error`` for handler errors, both with ``http.response.status``. A refused
    authorization is only a warning (``error authorizing context: …``, answered 401) and
    an authorization backend failure an error (``error checking authorization``, 400);
    neither carries a status, so it is filled in here.
    """
    msg = str(entry.get("msg", ""))
    if msg in ("response completed", "response completed with error"):
        status = entry.get("http.response.status")
        return int(status) if status is not None else None
    if msg.startswith("error authorizing context"):
        return 401
    if msg.startswith("error checking authorization"):
        return 400
    return None


def parse_access_log(text: str) -> list[LoggedRequest]:
    """Requests in a JSON registry log, in order, without the harness's readiness probes."""
    requests = []
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by a concurrent read; the next read sees it whole
        status = _logged_status(entry)
        agent = str(entry.get("http.request.useragent", ""))
        if status is None or agent == PROBE_USER_AGENT:
            continue
        path, _, query = str(entry.get("http.request.uri", "")).partition("?")
        requests.append(
            LoggedRequest(
                method=str(entry.get("http.request.method", "")),
                path=path,
                status=status,
                query=query,
                user=entry.get("auth.user.name"),
                user_agent=agent,
                request_id=str(entry.get("http.request.id", "")),
            )
        )
    return requests


# -- what fixtures yield -------------------------------------------------------------------
@dataclass(frozen=True)
class RegistryInstance:
    """A running registry. ``username``/``password`` are the credentials that may push."""

    host: str  # "127.0.0.1:PORT"
    scheme: Literal["http", "https"]
    auth: AuthKind
    root_dir: Path
    log_file: Path
    config_file: Path
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    token_server: TokenServer | None = field(default=None, compare=False)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    @property
    def port(self) -> int:
        return int(self.host.rpartition(":")[2])

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts this registry (the test CA for ``registry_tls``)."""
        if self.ca_file is None:
            return ssl.create_default_context()
        return ssl.create_default_context(cafile=str(self.ca_file))

    def access_log(self) -> list[LoggedRequest]:
        """Every request the registry has answered so far (see :func:`parse_access_log`)."""
        return parse_access_log(self.log_file.read_text(errors="replace"))

    def count_requests(
        self, method: str | None = None, path_contains: str | None = None, *, since: int = 0
    ) -> int:
        """How many logged requests match; ``since`` skips the first entries of access_log()."""
        return sum(
            1
            for r in self.access_log()[since:]
            if (method is None or r.method == method.upper())
            and (path_contains is None or path_contains in r.path)
        )


# -- test PKI ------------------------------------------------------------------------------
@dataclass(frozen=True)
class TestCA:
    """A throwaway CA that issues server certificates and token-signing certificates."""

    __test__ = False  # not a test class, despite the name

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, common_name: str) -> TestCA:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
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
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    def issue(
        self, common_name: str, *, hosts: tuple[str, ...] = ()
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """A leaf key and certificate; with ``hosts`` it is a TLS server certificate."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
        )
        if hosts:
            sans: list[x509.GeneralName] = []
            for host in hosts:
                try:
                    sans.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    sans.append(x509.DNSName(host))
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), False)
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False
            )
        return key, builder.sign(self.key, hashes.SHA256())

    def write_pem(self, path: Path) -> Path:
        path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        return path


def _write_key_pair(
    key: ec.EllipticCurvePrivateKey, cert: x509.Certificate, directory: Path
) -> tuple[Path, Path]:
    cert_path, key_path = directory / "server.crt", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


# -- htpasswd ------------------------------------------------------------------------------
def bcrypt_hash(password: str) -> str:
    """A bcrypt hash (the only htpasswd format distribution 2.8 accepts).

    Uses the ``bcrypt`` package when installed, else libxcrypt's ``crypt()`` (glibc systems),
    so the harness needs no package beyond the dev extras.
    """
    try:
        import bcrypt
    except ImportError:
        pass
    else:
        return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    library = ctypes.util.find_library("crypt")
    if library is None:
        pytest.fail(
            "no bcrypt implementation for the htpasswd file: install the 'bcrypt' package "
            "into .venv (.venv/bin/pip install bcrypt) or libcrypt1",
            pytrace=False,
        )
    crypt = ctypes.CDLL(library).crypt
    crypt.restype = ctypes.c_char_p
    crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    alphabet = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    # The 22nd salt character only carries 2 bits; one of ".Oeu" keeps it canonical.
    salt = "".join(secrets.choice(alphabet) for _ in range(21)) + secrets.choice(".Oeu")
    hashed = crypt(password.encode(), f"$2y$04${salt}".encode())
    if not hashed or not hashed.startswith(b"$2"):
        pytest.fail(
            f"libcrypt ({library}) cannot make bcrypt hashes; install bcrypt", pytrace=False
        )
    return str(hashed.decode())


# -- the process ---------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class _Options:
    auth: AuthKind = "anonymous"
    tls_ca: TestCA | None = None
    token_server: TokenServer | None = None
    token_bundle: Path | None = None


class RegistryProcess:
    """One ``docker-registry serve`` child process; start() returns its RegistryInstance."""

    def __init__(self, workdir: Path, options: _Options) -> None:
        self.workdir = workdir
        self.options = options
        self.process: subprocess.Popen[bytes] | None = None
        self.instance: RegistryInstance | None = None

    def start(self) -> RegistryInstance:
        binary = require_tool("docker-registry")
        self.workdir.mkdir(parents=True, exist_ok=True)
        root = self.workdir / "storage"
        root.mkdir(exist_ok=True)
        extra = self._auth_and_tls()
        failure = ""
        for attempt in range(_START_ATTEMPTS):
            instance = self._write_config(root, extra, free_port(), attempt)
            failure = self._launch(binary, instance)
            if not failure:
                self.instance = instance
                return instance
            if "address already in use" not in failure:
                break
        pytest.fail(
            f"docker-registry did not become ready ({self.workdir}):\n{failure}", pytrace=False
        )

    def _auth_and_tls(self) -> dict[str, Any]:
        opts = self.options
        extra: dict[str, Any] = {}
        if opts.auth == "basic":
            htpasswd = self.workdir / "htpasswd"
            htpasswd.write_text(f"{BASIC_USER}:{bcrypt_hash(BASIC_PASSWORD)}\n")
            extra["auth"] = {"htpasswd": {"realm": "test-basic-realm", "path": str(htpasswd)}}
        elif opts.auth == "token":
            if opts.token_server is None or opts.token_bundle is None:
                raise ValueError("a token registry needs a token server and its root bundle")
            extra["auth"] = {
                "token": {
                    "realm": opts.token_server.url,
                    "service": opts.token_server.service,
                    "issuer": opts.token_server.issuer,
                    "rootcertbundle": str(opts.token_bundle),
                }
            }
        if opts.tls_ca is not None:
            key, cert = opts.tls_ca.issue("127.0.0.1", hosts=("127.0.0.1", "localhost"))
            cert_path, key_path = _write_key_pair(key, cert, self.workdir)
            extra["tls"] = {"certificate": str(cert_path), "key": str(key_path)}
        return extra

    def _write_config(
        self, root: Path, extra: dict[str, Any], port: int, attempt: int
    ) -> RegistryInstance:
        opts = self.options
        http: dict[str, Any] = {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16)}
        if "tls" in extra:
            http["tls"] = extra["tls"]
        config: dict[str, Any] = {
            "version": 0.1,
            # JSON lines on stderr (redirected to log_file); the Apache-style access log on
            # stdout would duplicate them.
            "log": {"level": "info", "formatter": "json", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(root)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": http,
        }
        if "auth" in extra:
            config["auth"] = extra["auth"]
        config_file = self.workdir / "config.yml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        username: str | None = None
        password: str | None = None
        if opts.auth == "basic":
            username, password = BASIC_USER, BASIC_PASSWORD
        elif opts.auth == "token":
            username, password = TOKEN_USER, TOKEN_PASSWORD
        return RegistryInstance(
            host=f"127.0.0.1:{port}",
            scheme="https" if opts.tls_ca else "http",
            auth=opts.auth,
            root_dir=root,
            log_file=self.workdir / f"registry.{attempt}.log",
            config_file=config_file,
            username=username,
            password=password,
            ca_file=opts.tls_ca.write_pem(self.workdir / "ca.crt") if opts.tls_ca else None,
            token_server=opts.token_server,
        )

    def _launch(self, binary: str, instance: RegistryInstance) -> str:
        """Start the process and wait for /v2/ to answer; return "" or why it failed."""
        with instance.log_file.open("wb") as log, open(os.devnull, "wb") as devnull:
            self.process = subprocess.Popen(
                [binary, "serve", str(instance.config_file)],
                stdin=subprocess.DEVNULL,
                stdout=devnull,
                stderr=log,
            )
        deadline = time.monotonic() + READY_TIMEOUT
        headers = {"User-Agent": PROBE_USER_AGENT}
        with httpx.Client(verify=instance.ssl_context(), timeout=1.0, headers=headers) as probe:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    return _tail(instance.log_file) or f"exited with {self.process.returncode}"
                with contextlib.suppress(httpx.TransportError):
                    probe.get(f"{instance.url}/v2/")
                    return ""  # any HTTP answer, 401 included, means it serves
                time.sleep(0.02)
        self.stop()
        return f"no answer on {instance.url}/v2/ within {READY_TIMEOUT:.0f} s\n" + _tail(
            instance.log_file
        )

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def _tail(log_file: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log_file.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# -- fixtures ------------------------------------------------------------------------------
@contextlib.contextmanager
def running_registry(workdir: Path, options: _Options) -> Iterator[RegistryInstance]:
    process = RegistryProcess(workdir, options)
    try:
        yield process.start()
    finally:
        process.stop()


@pytest.fixture(scope="session")
def registry_ca() -> TestCA:
    """The CA behind ``registry_tls`` (and factory TLS registries)."""
    return TestCA.create("appliance-release test registry CA")


@pytest.fixture(scope="session")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenServer]:
    """The bearer-token issuer; its signing certificate chains to its own test CA."""
    ca = TestCA.create("appliance-release test token CA")
    key, cert = ca.issue("test token signer")
    server = TokenServer(
        service=TOKEN_SERVICE,
        issuer=TOKEN_ISSUER,
        signing_key=key,
        cert_chain=[cert],
        users={TOKEN_USER: TOKEN_PASSWORD},
        root_bundle=ca.write_pem(tmp_path_factory.mktemp("token-server") / "token-root.crt"),
    )
    with server:
        yield server


def _token_options(server: TokenServer) -> _Options:
    return _Options(auth="token", token_server=server, token_bundle=server.root_bundle)


@contextlib.contextmanager
def token_registry(workdir: Path) -> Iterator[RegistryInstance]:
    """A registry with bearer-token auth and its token server, outside pytest (the demo)."""
    ca = TestCA.create("appliance-release token CA")
    key, cert = ca.issue("token signer")
    workdir.mkdir(parents=True, exist_ok=True)
    server = TokenServer(service=TOKEN_SERVICE, issuer=TOKEN_ISSUER, signing_key=key,
                         cert_chain=[cert], users={TOKEN_USER: TOKEN_PASSWORD},
                         root_bundle=ca.write_pem(workdir / "token-root.crt"))
    with server, running_registry(workdir / "registry", _token_options(server)) as instance:
        yield instance


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryInstance]:
    with running_registry(tmp_path_factory.mktemp("registry"), _Options()) as instance:
        yield instance


@pytest.fixture(scope="session")
def registry_basic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryInstance]:
    workdir = tmp_path_factory.mktemp("registry-basic")
    with running_registry(workdir, _Options(auth="basic")) as instance:
        yield instance


@pytest.fixture(scope="session")
def registry_token(
    tmp_path_factory: pytest.TempPathFactory, token_server: TokenServer
) -> Iterator[RegistryInstance]:
    workdir = tmp_path_factory.mktemp("registry-token")
    with running_registry(workdir, _token_options(token_server)) as instance:
        yield instance


@pytest.fixture(scope="session")
def registry_tls(
    tmp_path_factory: pytest.TempPathFactory, registry_ca: TestCA
) -> Iterator[RegistryInstance]:
    workdir = tmp_path_factory.mktemp("registry-tls")
    with running_registry(workdir, _Options(tls_ca=registry_ca)) as instance:
        yield instance


class RegistryFactory:
    """Starts extra registries for one test: ``registry_factory()``, ``(auth="basic")``, …"""

    def __init__(self, request: pytest.FixtureRequest, base: Path) -> None:
        self._request = request
        self._base = base
        self._processes: list[RegistryProcess] = []

    def __call__(self, *, auth: AuthKind = "anonymous", tls: bool = False) -> RegistryInstance:
        if auth == "token":
            options = _token_options(self._request.getfixturevalue("token_server"))
        else:
            options = _Options(auth=auth)
        if tls:
            options.tls_ca = self._request.getfixturevalue("registry_ca")
        process = RegistryProcess(self._base / f"registry-{len(self._processes)}", options)
        self._processes.append(process)
        return process.start()

    def stop_all(self) -> None:
        for process in self._processes:
            process.stop()


@pytest.fixture
def registry_factory(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RegistryFactory]:
    factory = RegistryFactory(request, tmp_path_factory.mktemp("registry-factory"))
    try:
        yield factory
    finally:
        factory.stop_all()
