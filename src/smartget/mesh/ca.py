"""The mesh's private CA, node certificates, TLS contexts, release keys and packet signatures.

The original MSW trusts anyone who connects. Here (issue 7, "Security"):

- ``ca init CA_DIR`` makes an Ed25519 CA (``ca.crt``, ``ca.key`` mode 0600).
- ``ca issue CA_DIR NODE_ID --out NODE_DIR`` writes ``ca.crt``, ``node.crt`` and ``node.key``
  (an Ed25519 key; the certificate's common name is the node id). Never the CA's key.
- Links are mutual TLS 1.3 against ``ca.crt``; a node's id is its certificate's common
  name, so no header can claim another id on a direct link.
- A packet that travels through proxies carries ``sig`` (the origin node's Ed25519
  signature) and ``cert`` (its certificate) so the destination can tell who sent it
  even though the proxies could have changed it (:func:`sign_datapack`).
- ``release-key init`` makes the Ed25519 key that signs code updates (apps/update.py).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import re
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from smartget.errors import AuthError, ConfigError
from smartget.mesh.datapack import Datapack
from smartget.mesh.policy import final_destination

__all__ = [
    "NODE_ID_RE",
    "NodeIdentity",
    "cert_node_id",
    "client_context",
    "init_ca",
    "init_release_key",
    "issue_node",
    "load_identity",
    "load_public_key",
    "server_context",
    "sign_datapack",
    "verify_datapack",
]

NODE_ID_RE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
CA_DAYS = 3650
NODE_DAYS = 825
# Headers a proxy changes on the way (to: hops are stripped; hops: counted) or that carry
# the signature itself; everything else is signed, the final destination ``dest`` too.
UNSIGNED_HEADERS = frozenset({"to", "hops", "sig", "cert"})
_SHA256 = hashes.SHA256()


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def _key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def init_ca(ca_dir: Path, name: str = "SmartGet mesh CA", *, force: bool = False) -> Path:
    """Create ``ca.crt`` and ``ca.key`` in ``ca_dir``; refuse to overwrite without ``force``."""
    ca_dir.mkdir(parents=True, exist_ok=True)
    crt, key_path = ca_dir / "ca.crt", ca_dir / "ca.key"
    if not force and (crt.exists() or key_path.exists()):
        raise ConfigError(f"{ca_dir} already holds a CA; pass --force to replace it")
    key = Ed25519PrivateKey.generate()
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(key, None)
    )
    _write_private(key_path, _key_pem(key))
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return crt


def _load_ca(ca_dir: Path) -> tuple[x509.Certificate, Ed25519PrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
        key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), None)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the CA in {ca_dir} (ca.crt, ca.key): {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{ca_dir / 'ca.key'} is not an Ed25519 key")
    return cert, key


def issue_node(ca_dir: Path, node_id: str, out_dir: Path, *, days: int = NODE_DAYS) -> Path:
    """Write ``ca.crt``, ``node.crt`` and ``node.key`` for ``node_id`` into ``out_dir``."""
    if not NODE_ID_RE.fullmatch(node_id) or node_id == "*" or "&" in node_id:
        raise ConfigError(f"node id {node_id!r} must be 1-64 of A-Z a-z 0-9 _ . -")
    ca_cert, ca_key = _load_ca(ca_dir)
    key = Ed25519PrivateKey.generate()
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(node_id))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(node_id)]), critical=False)
        .sign(ca_key, None)
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_private(out_dir / "node.key", _key_pem(key))
    (out_dir / "node.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (out_dir / "ca.crt").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return out_dir / "node.crt"


def cert_node_id(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1 or not isinstance(names[0].value, str):
        raise AuthError("certificate has no single common name")
    node_id = names[0].value
    if not NODE_ID_RE.fullmatch(node_id):
        raise AuthError(f"certificate names an invalid node id {node_id[:64]!r}")
    return node_id


@dataclass(frozen=True)
class NodeIdentity:
    """What a node loads from NODE_DIR: its id, key, certificate and the CA it trusts."""

    tls_dir: Path
    node_id: str
    key: Ed25519PrivateKey
    cert: x509.Certificate
    cert_der: bytes
    ca_cert: x509.Certificate

    @property
    def cert_b64(self) -> str:
        return base64.b64encode(self.cert_der).decode("ascii")


def load_identity(tls_dir: Path) -> NodeIdentity:
    """Load NODE_DIR; the node id is the certificate's common name (issue 7)."""
    try:
        cert = x509.load_pem_x509_certificate((tls_dir / "node.crt").read_bytes())
        ca_cert = x509.load_pem_x509_certificate((tls_dir / "ca.crt").read_bytes())
        key = serialization.load_pem_private_key((tls_dir / "node.key").read_bytes(), None)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot read {tls_dir}/{{ca.crt,node.crt,node.key}} "
            f"(make them with 'smartget mesh ca issue'): {exc}"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{tls_dir / 'node.key'} is not an Ed25519 key")
    try:
        node_id = cert_node_id(cert)
        cert.verify_directly_issued_by(ca_cert)
    except (AuthError, ValueError, TypeError, InvalidSignature) as exc:
        raise ConfigError(f"{tls_dir / 'node.crt'} is not a node certificate of ca.crt") from exc
    return NodeIdentity(
        tls_dir, node_id, key, cert, cert.public_bytes(serialization.Encoding.DER), ca_cert
    )


def _context(purpose: ssl.Purpose, ident: NodeIdentity) -> ssl.SSLContext:
    ctx = ssl.create_default_context(purpose, cafile=str(ident.tls_dir / "ca.crt"))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False  # peers are named by their certificate's CN, not by DNS
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(ident.tls_dir / "node.crt", ident.tls_dir / "node.key")
    return ctx


def server_context(ident: NodeIdentity) -> ssl.SSLContext:
    """Accept only clients holding a certificate of our CA (mutual TLS 1.3)."""
    return _context(ssl.Purpose.CLIENT_AUTH, ident)


def client_context(ident: NodeIdentity) -> ssl.SSLContext:
    return _context(ssl.Purpose.SERVER_AUTH, ident)


def peer_id_from_ssl(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str:
    """The node id of a verified TLS peer."""
    if ssl_object is None:
        raise AuthError("not a TLS connection")
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        raise AuthError("peer sent no certificate")
    return cert_node_id(x509.load_der_x509_certificate(der))


def _signed_bytes(dp: Datapack) -> bytes:
    head = "\n".join(f"{k}: {v}" for k, v in sorted(dp.head.items()) if k not in UNSIGNED_HEADERS)
    digest = hashlib.sha256(dp.body).hexdigest() if dp.method != "file" else ""
    return f"msw-sig/1\n{dp.method} {dp.app}\n{head}\n{digest}".encode()


def sign_datapack(dp: Datapack, ident: NodeIdentity, now: float | None = None) -> Datapack:
    """``dp`` with ``sig`` and ``cert``, so the destination can verify ``id`` through proxies.

    A file packet's content is covered by its signed ``sha256`` header; the signed
    ``time`` (unix seconds) lets a receiver refuse an old packet replayed by a proxy, and
    the signed ``dest`` (the last hop of ``to``, policy.py ``final_destination``) one
    sent on to another node.
    """
    stamp = dp.head["time"] if "time" in dp.head else str(int(time.time() if now is None else now))
    dest = final_destination(dp.head.get("to", "")) or ident.node_id
    unsigned = dp.with_head(
        {"id": ident.node_id, "time": stamp, "dest": dest, "cert": ident.cert_b64}, drop=("sig",)
    )
    signature = base64.b64encode(ident.key.sign(_signed_bytes(unsigned))).decode("ascii")
    return unsigned.with_head({"sig": signature})


_CERT_CACHE: dict[tuple[bytes, str], tuple[str, Ed25519PublicKey, datetime.datetime]] = {}
_CERT_CACHE_MAX = 4096


def _origin_cert(cert_b64: str, ca_cert: x509.Certificate) -> tuple[str, Ed25519PublicKey]:
    """(node id, key) of a certificate of our CA; checked chains are cached."""
    fingerprint = ca_cert.fingerprint(_SHA256)
    now = datetime.datetime.now(datetime.UTC)
    cached = _CERT_CACHE.get((fingerprint, cert_b64))
    if cached is not None and now <= cached[2]:
        return cached[0], cached[1]
    cert = x509.load_der_x509_certificate(base64.b64decode(cert_b64, validate=True))
    cert.verify_directly_issued_by(ca_cert)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise AuthError("origin certificate is not valid now")
    public = cert.public_key()
    if not isinstance(public, Ed25519PublicKey):
        raise AuthError("origin certificate is not Ed25519")
    node_id = cert_node_id(cert)
    if len(_CERT_CACHE) >= _CERT_CACHE_MAX:
        _CERT_CACHE.clear()
    _CERT_CACHE[(fingerprint, cert_b64)] = (node_id, public, cert.not_valid_after_utc)
    return node_id, public


def verify_datapack(
    dp: Datapack,
    ca_cert: x509.Certificate,
    *,
    max_age: float | None = None,
    now: float | None = None,
) -> str:
    """Return the origin node id proven by ``sig``/``cert``, or raise :class:`AuthError`.

    With ``max_age``, a packet whose signed ``time`` is further than that from ``now``
    (unix seconds) is refused: flags are remembered only that long, so an older copy
    could be a replay.
    """
    if max_age is not None:
        stamp = dp.head.get("time", "")
        current = time.time() if now is None else now
        if (
            not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12)
            or abs(current - int(stamp)) > max_age
        ):
            raise AuthError(f"signed time {stamp[:12]!r} is not within {max_age:.0f} s of now")
    try:
        node_id, public = _origin_cert(dp.head["cert"], ca_cert)
        public.verify(base64.b64decode(dp.head["sig"], validate=True), _signed_bytes(dp))
    except KeyError as exc:
        raise AuthError("packet is not signed (no sig/cert header)") from exc
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise AuthError(
            f"bad packet signature or certificate: {exc or type(exc).__name__}"
        ) from exc
    if node_id != dp.head.get("id"):
        raise AuthError(f"signed by {node_id!r} but claims id {dp.head.get('id')!r}")
    return node_id


def init_release_key(out_dir: Path, *, force: bool = False) -> tuple[Path, Path]:
    """Write ``release.key`` (keep it offline) and ``release.pub`` (give it to every node)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    key_path, pub_path = out_dir / "release.key", out_dir / "release.pub"
    if not force and key_path.exists():
        raise ConfigError(f"{key_path} exists; pass --force to replace it")
    key = Ed25519PrivateKey.generate()
    _write_private(key_path, _key_pem(key))
    pub_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key_path, pub_path


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), None)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the release key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} is not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the release public key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path} is not an Ed25519 public key")
    return key
