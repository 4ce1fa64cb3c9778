"""Certificates and keys for a local Kubernetes control plane.

A throwaway CA signs the API server's serving certificate and one client
certificate per component, so authentication and RBAC are the real thing:
the scheduler is ``system:kube-scheduler``, the admin is in ``system:masters``.
The helpers (:func:`new_ca`, :func:`issue_certificate`, :func:`write_private_key`)
also make the certificates of a NATS server that requires TLS.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from celeriac_devenv.errors import DevenvError

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

_VALIDITY = datetime.timedelta(days=30)


@dataclass(frozen=True)
class ClientIdentity:
    """Who a client certificate says its holder is."""

    file_stem: str
    user: str
    groups: tuple[str, ...] = ()


ADMIN = ClientIdentity("admin", "celeriac-admin", ("system:masters",))
CONTROLLER_MANAGER = ClientIdentity("controller-manager", "system:kube-controller-manager")
SCHEDULER = ClientIdentity("scheduler", "system:kube-scheduler")


@dataclass(frozen=True)
class Pki:
    """Paths of everything :func:`create_pki` writes."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def serving_cert(self) -> Path:
        return self.directory / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.directory / "apiserver.key"

    @property
    def sa_public(self) -> Path:
        return self.directory / "sa.pub"

    @property
    def sa_private(self) -> Path:
        return self.directory / "sa.key"

    def client_cert(self, who: ClientIdentity) -> Path:
        return self.directory / f"{who.file_stem}.crt"

    def client_key(self, who: ClientIdentity) -> Path:
        return self.directory / f"{who.file_stem}.key"


@dataclass(frozen=True)
class CertificateAuthority:
    """A throwaway CA held in memory: its key and self-signed certificate."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def cert_pem(self) -> bytes:
        """The CA certificate, PEM-encoded (what clients trust)."""
        from cryptography.hazmat.primitives import serialization

        return self.cert.public_bytes(serialization.Encoding.PEM)


def _require_cryptography() -> None:
    try:
        import cryptography  # noqa: F401
    except ImportError as exc:
        raise DevenvError(
            "the local environment needs the 'cryptography' package: pip install 'celeriac[dev]'"
        ) from exc


def _name(cn: str, orgs: Sequence[str] = ()) -> x509.Name:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    return x509.Name(attrs)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def new_ca(common_name: str = "celeriac-devenv-ca") -> CertificateAuthority:
    """A new CA: an EC P-256 key and a certificate valid for 30 days."""
    _require_cryptography()
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(common_name)
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return CertificateAuthority(key=key, cert=cert)


def issue_certificate(
    ca: CertificateAuthority,
    common_name: str,
    usage: x509.ObjectIdentifier,
    *,
    organizations: Sequence[str] = (),
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    """A certificate signed by ``ca`` (PEM) and its new EC key, for one extended key usage;
    with subject alternative names when ``dns_names`` or ``ip_addresses`` are given."""
    _require_cryptography()
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, organizations))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    san: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    san += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    cert = builder.sign(ca.key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), key


def write_private_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    """Write ``key`` unencrypted as PKCS#8 PEM, readable by its owner only."""
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def create_pki(directory: Path) -> Pki:
    """Write a CA, the API server certificate, client certificates and SA keys."""
    _require_cryptography()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID

    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(directory)
    ca = new_ca("celeriac-devenv-ca")
    pki.ca_cert.write_bytes(ca.cert_pem)

    pem, k = issue_certificate(
        ca,
        "kube-apiserver",
        ExtendedKeyUsageOID.SERVER_AUTH,
        dns_names=["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"],
        ip_addresses=["127.0.0.1", "10.0.0.1"],
    )
    pki.serving_cert.write_bytes(pem)
    write_private_key(pki.serving_key, k)

    for who in (ADMIN, CONTROLLER_MANAGER, SCHEDULER):
        pem, k = issue_certificate(
            ca, who.user, ExtendedKeyUsageOID.CLIENT_AUTH, organizations=who.groups
        )
        pki.client_cert(who).write_bytes(pem)
        write_private_key(pki.client_key(who), k)

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    write_private_key(pki.sa_private, sa_key)
    pki.sa_public.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pki
