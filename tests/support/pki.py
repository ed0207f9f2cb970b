"""A throwaway public key infrastructure for tests: CAs, loopback server certificates, signing keys.

Keys are ECDSA P-256 (fast to generate); every file is PEM under the directory given.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@attrs.frozen(kw_only=True)
class IssuedCert:
    """A certificate and its private key, in memory and as PEM files."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_path: Path
    key_path: Path

    @property
    def cert_der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Hoist tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


class CertificateAuthority:
    """A self-signed CA that issues server and signing certificates into ``directory``."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_path = self.directory / f"{name}.crt"
        self.cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.key_path = self.directory / f"{name}.key"
        _write_key(self.key_path, self.key)

    def issue(self, name: str, *, hosts: tuple[str, ...] = LOOPBACK_HOSTS, server: bool = True) -> IssuedCert:
        """Issue a leaf certificate: a TLS server certificate for ``hosts``, or a signing certificate."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        if server:
            sans: list[x509.GeneralName] = []
            for host in hosts:
                try:
                    sans.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    sans.append(x509.DNSName(host))
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        cert_path = self.directory / f"{name}.crt"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path = self.directory / f"{name}.key"
        _write_key(key_path, key)
        return IssuedCert(cert=cert, key=key, cert_path=cert_path, key_path=key_path)


class TestPKI:
    """The session's PKI: the trusted ``ca``, an unrelated ``other_ca``, and what they issued.

    ``server`` is a loopback TLS certificate from ``ca``; ``wrong_server`` is the same from
    ``other_ca``; ``token_ca`` and ``token_signer`` sign Bearer tokens.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.ca = CertificateAuthority(self.directory, "hoist-test-ca")
        self.other_ca = CertificateAuthority(self.directory, "hoist-other-ca")
        self.server = self.ca.issue("registry-server")
        self.wrong_server = self.other_ca.issue("registry-server-other")
        self.token_ca = CertificateAuthority(self.directory, "hoist-token-ca")
        self.token_signer = self.token_ca.issue("token-signer", server=False)

    @property
    def ca_cert(self) -> Path:
        return self.ca.cert_path

    @property
    def other_ca_cert(self) -> Path:
        return self.other_ca.cert_path

    def cert_dir(self, *, wrong: bool = False) -> Path:
        """A directory with just ``ca.crt`` (for ``skopeo --cert-dir`` or a hosts.toml-style layout)."""
        path = self.directory / ("certs-other" if wrong else "certs")
        path.mkdir(exist_ok=True)
        src = self.other_ca.cert_path if wrong else self.ca.cert_path
        (path / "ca.crt").write_bytes(src.read_bytes())
        return path
