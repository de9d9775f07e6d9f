"""A private CA and the certificates a cluster's NATS connections use.

``ringmaster nats-config --tls`` writes into one directory: ``ca.crt``/``ca.key`` (the
CA, kept by whoever issues certificates), ``server.crt``/``server.key`` (every
nats-server, leaf connections included) and ``client.crt``/``client.key`` plus one
``node-<id>.crt``/``.key`` per node (clients verified by the server). Files already
present are kept, so running it again changes nothing; keys are written mode 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shared.errors import ConfigError

#: Names the server certificate answers to: compose hosts (routes dial them too), the
#: Kubernetes service, and loopback for a leaf's local clients and the tests.
SERVER_NAMES = (
    "nats", "nats-1", "nats-2", "nats-3", "nats.default.svc", "nats.ringmaster.svc", "localhost",
    # The Helm chart's routes dial the pods by their headless-service names.
    "*.nats-headless", "*.nats-headless.default.svc", "*.nats-headless.default.svc.cluster.local",
)  # fmt: skip
VALID_DAYS = 825


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    crt, key = directory / "ca.crt", directory / "ca.key"
    try:
        cert = x509.load_pem_x509_certificate(crt.read_bytes())
        private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"TLS CA {crt} / {key}: {exc}") from None
    if not isinstance(private, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"TLS CA key {key}: not an EC key this tool made")
    return cert, private


def _make_ca(directory: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("ringmaster private CA"))
        .issuer_name(_name("ringmaster private CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    _write_key(directory / "ca.key", key)
    (directory / "ca.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _issue(directory: Path, stem: str, common: str, *, server: bool) -> None:
    ca_cert, ca_key = _load_ca(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    # A server also dials routes to its peers, where it is the client of the TLS session.
    usage = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if server:
        usage.append(ExtendedKeyUsageOID.SERVER_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    )
    if server:
        names: list[x509.GeneralName] = [x509.DNSName(n) for n in SERVER_NAMES]
        names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write_key(directory / f"{stem}.key", key)
    (directory / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_tls(directory: Path, node_ids: list[str]) -> list[str]:
    """Make the CA and the missing certificates in ``directory``; the names it wrote."""
    directory.mkdir(parents=True, exist_ok=True)
    made: list[str] = []
    if not (directory / "ca.crt").exists():
        _make_ca(directory)
        made.append("ca.crt")
    wanted = [("server", "nats", True), ("client", "ringmaster client", False)]
    wanted += [(f"node-{n}", f"node {n}", False) for n in node_ids]
    for stem, common, server in wanted:
        if not (directory / f"{stem}.crt").exists():
            _issue(directory, stem, common, server=server)
            made.append(f"{stem}.crt")
    return made
