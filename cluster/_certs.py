"""TLS certificates for a test or small deployment: a CA, then scheduler, worker and client
certificates signed by it (`nirlink cluster certs DIR`). Production sites use their own PKI;
nirlink only needs the three file paths per process (see cluster/recipes/README.md).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from pathlib import Path

__all__ = ["make_certificates", "security_from_dir", "driver_security", "ROLES"]

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


def driver_security(worker_security):
    """The security of a client opened inside a worker process: a submitted job's driver.

    A worker started as the recipe says (`dask worker --tls-ca-file ca.pem --tls-cert
    worker.pem --tls-key worker-key.pem`) holds a worker certificate and no client one, while
    distributed builds a client's TLS context from the client role only (with none:
    ``TypeError: TLS expects a ssl_context``). So, in order: the client certificates of the
    setting ``nirlink.cluster.tls-dir`` when it is set on the worker; the worker's own client
    certificate (Dask's ``distributed.comm.tls.client.*`` settings); else the worker's
    certificate, which the scheduler already accepts from this very process (the worker uses
    it for its own connections to the scheduler). Without TLS: the worker's security as is.
    """
    import dask.config
    from distributed.security import Security

    tls_dir = dask.config.get("nirlink.cluster.tls-dir", None)
    if tls_dir:
        return security_from_dir(tls_dir, "client")
    sec = worker_security
    if sec is None or not sec.tls_ca_file or sec.tls_client_cert or not sec.tls_worker_cert:
        return sec
    return Security(require_encryption=sec.require_encryption, tls_ca_file=sec.tls_ca_file, tls_ciphers=sec.tls_ciphers,
                    tls_min_version=sec.tls_min_version, tls_max_version=sec.tls_max_version,
                    tls_client_cert=sec.tls_worker_cert, tls_client_key=sec.tls_worker_key,
                    extra_conn_args=sec.extra_conn_args)
