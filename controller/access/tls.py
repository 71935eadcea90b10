"""The broker's TLS: a certificate authority the operator owns, and the broker's certificate
signed by it (``loa broker tls``). Boards trust that CA alone (it is in their bundles), so
nobody can stand in for the broker with a certificate bought elsewhere.

Files in the folder: ``ca.pem`` (give it to boards and to ``LOA_MQTT_CA_FILE``), ``ca.key``
(keep it offline; 0600), ``server.pem`` and ``server.key`` (the broker's; 0600), and
``mosquitto-tls.conf``, a listener to include in Mosquitto's configuration. A CA already in
the folder is kept: running it again issues a new broker certificate from it.
"""

from __future__ import annotations

import ipaddress
import os
from datetime import timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from controller.db.models import utcnow

__all__ = ["make_broker_tls"]


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM,
                                   serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))


def _ca(out: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key_path, cert_path = out / "ca.key", out / "ca.pem"
    if key_path.exists() and cert_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key, x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Loa broker CA")])
    now = utcnow()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False,
                                         decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


def make_broker_tls(out: Path, hosts: list[str], port: int = 8883) -> Path:
    """The CA (kept if present) and a broker certificate for ``hosts`` (names or
    addresses boards connect to); returns the Mosquitto listener snippet's path."""
    if not hosts:
        raise ValueError("name at least one host the boards connect to")
    out.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _ca(out)
    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = []
    for h in hosts:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            alt.append(x509.DNSName(h))
    now = utcnow()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=730))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write_key(out / "server.key", key)
    (out / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    snippet = out / "mosquitto-tls.conf"
    snippet.write_text(f"# written by loa broker tls: boards connect with mqtts://{hosts[0]}:{port}\n"
                       f"listener {port}\ncafile {(out / 'ca.pem').resolve()}\n"
                       f"certfile {(out / 'server.pem').resolve()}\n"
                       f"keyfile {(out / 'server.key').resolve()}\n"
                       "tls_version tlsv1.2\n")
    return snippet
