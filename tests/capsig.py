"""Test helpers: a CAP issuer's key and certificate made on the spot, and XML-DSig signing."""

from __future__ import annotations


def make_issuer(name: str) -> tuple[bytes, bytes]:
    """A private key and self-signed certificate (PEM), made here: nothing is fetched."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
            .sign(key, hashes.SHA256()))
    return (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()),
            cert.public_bytes(serialization.Encoding.PEM))


def sign_xml(xml: bytes, key: bytes, cert: bytes) -> bytes:
    from lxml import etree
    from signxml import XMLSigner

    signed = XMLSigner().sign(etree.fromstring(xml), key=key, cert=cert.decode())
    return etree.tostring(signed)
