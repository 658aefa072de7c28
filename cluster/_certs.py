"""TLS certificates for a test or small deployment: a CA, then scheduler, worker and client
certificates signed by it (`nirlink cluster certs DIR`). Production sites use their own PKI;
nirlink only needs the three file paths per process (see cluster/recipes/README.md).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

__all__ = ["make_certificates", "security_from_dir", "ROLES"]

ROLES = ("scheduler", "worker", "client")


def _key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key, path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    os.chmod(path, 0o600)


def make_certificates(directory: str | os.PathLike, *, hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
                      days: int = 365) -> dict[str, str]:
    """Write ca.pem/ca-key.pem and <role>.pem/<role>-key.pem for scheduler, worker and client."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nirlink test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    _write_key(ca_key, d / "ca-key.pem")
    alt = []
    for h in hosts:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            alt.append(x509.DNSName(h))
    out = {"ca": str(d / "ca.pem")}
    for role in ROLES:
        key = _key()
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"nirlink {role}")]))
                .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
                .add_extension(x509.SubjectAlternativeName(alt), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                               critical=False)
                .sign(ca_key, hashes.SHA256()))
        (d / f"{role}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, d / f"{role}-key.pem")
        out[role] = str(d / f"{role}.pem")
    return out


def security_from_dir(directory: str | os.PathLike, role: str = "client"):
    """A distributed.Security requiring TLS, from a directory made by make_certificates."""
    from distributed.security import Security

    d = Path(directory)
    missing = [p for p in ("ca.pem", f"{role}.pem", f"{role}-key.pem") if not (d / p).exists()]
    if missing:
        from nirlink.kernels import ClusterError

        raise ClusterError(f"TLS: {d} lacks {', '.join(missing)} (make them with `nirlink cluster certs {d}`)")
    kw = {"tls_ca_file": str(d / "ca.pem"), "require_encryption": True}
    cert, key = str(d / f"{role}.pem"), str(d / f"{role}-key.pem")
    if role == "client":
        kw.update(tls_client_cert=cert, tls_client_key=key)
    else:
        kw.update({f"tls_{role}_cert": cert, f"tls_{role}_key": key})
    return Security(**kw)
