"""TLS and SuperNode-authentication material for a bouquet federation.

Creates, under ``--out`` (default ``deploy/certs``):

* ``ca.crt`` / ``ca.key``: a private certificate authority (``ca.key`` is the most sensitive
  file: whoever holds it can mint server certificates your nodes will trust; keep it offline);
* ``server.pem`` / ``server.key``: the SuperLink's certificate, signed by the CA, with the
  subject alternative names given by ``--san`` (DNS names or IP addresses the SuperNodes and
  the CLI use to reach the SuperLink; ``server.key`` is secret, it stays on the SuperLink);
* ``supernode-<i>`` / ``supernode-<i>.pub``: one ECDSA P-384 key pair per SuperNode in
  OpenSSH format (the private key is secret and stays on its node; the ``.pub`` is registered
  with ``flwr supernode register``).

``ca.crt`` and the ``.pub`` files are public. Existing files are never overwritten (pass
``--force`` to replace them); private keys are written with mode 0600.

    python scripts/certs.py --supernodes 3 --san localhost --san 127.0.0.1 --san superlink
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SANS = ("localhost", "127.0.0.1", "::1", "superlink")


def _write(path: Path, data: bytes, *, secret: bool, force: bool) -> None:
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; pass --force to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600 if secret else 0o644)


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def make_ca(days: int) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "bouquet"),
            x509.NameAttribute(NameOID.COMMON_NAME, "bouquet federation CA"),
        ]
    )
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_server_cert(
    ca_key: rsa.RSAPrivateKey, ca_cert: x509.Certificate, sans: list[str], days: int
) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    if not sans:
        raise ValueError("the server certificate needs at least one --san")
    key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, sans[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([_san(s) for s in sans]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def make_node_key(comment: str) -> tuple[bytes, bytes]:
    """(private, public) ECDSA P-384 key in OpenSSH format, as ``ssh-keygen -t ecdsa -b 384``."""
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return private, public + f" {comment}\n".encode()


def generate(out: Path, sans: list[str], supernodes: int, days: int, force: bool) -> list[Path]:
    """Write the CA, the server certificate and ``supernodes`` key pairs; returns the paths."""
    written = []
    ca_key_path, ca_path = out / "ca.key", out / "ca.crt"
    if ca_path.exists() and ca_key_path.exists() and not force:
        ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
        if not isinstance(ca_key, rsa.RSAPrivateKey):
            raise ValueError(f"{ca_key_path} is not an RSA private key")
        ca_cert = x509.load_pem_x509_certificate(ca_path.read_bytes())
    else:
        ca_key, ca_cert = make_ca(days)
        _write(ca_key_path, _pem_key(ca_key), secret=True, force=force)
        _write(ca_path, ca_cert.public_bytes(serialization.Encoding.PEM), secret=False, force=force)
        written += [ca_key_path, ca_path]
    server_key, server_cert = make_server_cert(ca_key, ca_cert, sans, days)
    pem = server_cert.public_bytes(serialization.Encoding.PEM)
    _write(out / "server.key", _pem_key(server_key), secret=True, force=force)
    _write(out / "server.pem", pem, secret=False, force=force)
    written += [out / "server.key", out / "server.pem"]
    for i in range(supernodes):
        private, public = make_node_key(f"bouquet-supernode-{i}")
        _write(out / f"supernode-{i}", private, secret=True, force=force)
        _write(out / f"supernode-{i}.pub", public, secret=False, force=force)
        written += [out / f"supernode-{i}", out / f"supernode-{i}.pub"]
    return written


def check(
    ca_path: Path, cert_path: Path, key_path: Path | None, host: str, now: dt.datetime | None = None
) -> list[str]:
    """What is wrong with a SuperLink's TLS files, each problem with what to regenerate; empty
    when they are usable: both certificates within their validity dates, the server
    certificate signed by the CA, the key matching it, and ``host`` (how nodes reach the
    SuperLink; skipped for a wildcard address) among its subject alternative names."""
    now = now or dt.datetime.now(dt.timezone.utc)
    try:
        ca = x509.load_pem_x509_certificate(ca_path.read_bytes())
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError) as err:
        return [f"cannot read the certificates ({err})"]
    problems = []
    for name, c in (("CA certificate " + str(ca_path), ca), ("server certificate", cert)):
        if now < c.not_valid_before_utc:
            problems.append(f"the {name} is not valid before {c.not_valid_before_utc:%Y-%m-%d}")
        if now > c.not_valid_after_utc:
            problems.append(f"the {name} expired on {c.not_valid_after_utc:%Y-%m-%d}")
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        problems.append(f"{cert_path} was not signed by the CA {ca_path}")
    if key_path is not None:
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            if key.public_key().public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
                problems.append(f"{key_path} is not the key of {cert_path}")
        except (OSError, ValueError, TypeError) as err:
            problems.append(f"cannot read {key_path} ({err})")
    if host not in ("", "0.0.0.0", "::", "[::]"):
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = sans.get_values_for_type(x509.DNSName) + [
            str(ip) for ip in sans.get_values_for_type(x509.IPAddress)
        ]
        if host not in names:
            problems.append(
                f"{cert_path} does not name {host!r} (its names: {', '.join(names)}); SuperNodes "
                f"reaching the SuperLink as {host!r} would refuse it"
            )
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "deploy" / "certs")
    p.add_argument(
        "--san",
        action="append",
        help=f"DNS name or IP of the SuperLink (repeatable; default {', '.join(DEFAULT_SANS)})",
    )
    p.add_argument("--supernodes", type=int, default=2, help="SuperNode key pairs to create")
    p.add_argument("--days", type=int, default=365)
    p.add_argument("--force", action="store_true", help="replace existing files")
    args = p.parse_args(argv)
    try:
        paths = generate(
            args.out, args.san or list(DEFAULT_SANS), args.supernodes, args.days, args.force
        )
    except (FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    print("secrets (keep private, never commit): ca.key, server.key, supernode-<i>")
    return 0


if __name__ == "__main__":
    sys.exit(main())
