"""scripts/certs.py: a CA, a server certificate with the requested SANs signed by it, SuperNode
keys in OpenSSH format; secrets private; nothing overwritten without --force."""

import ipaddress
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

ROOT = Path(__file__).resolve().parent.parent


def _certs(*args):
    return subprocess.run(
        [sys.executable, "scripts/certs.py", *args], cwd=ROOT, capture_output=True, text=True
    )


def test_material_is_valid_and_secrets_are_private(tmp_path):
    out = tmp_path / "certs"
    done = _certs("--out", str(out), "--supernodes", "2", "--san", "superlink", "--san", "10.0.0.5")
    assert done.returncode == 0, done.stderr
    ca = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
    server = x509.load_pem_x509_certificate((out / "server.pem").read_bytes())
    server.verify_directly_issued_by(ca)  # raises if not signed by the CA
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["superlink"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.5")]
    for i in range(2):
        key = serialization.load_ssh_private_key((out / f"supernode-{i}").read_bytes(), None)
        public = serialization.load_ssh_public_key((out / f"supernode-{i}.pub").read_bytes())
        assert key.public_key().public_numbers() == public.public_numbers()  # type: ignore[union-attr]
        assert (out / f"supernode-{i}").stat().st_mode & 0o777 == 0o600
    for secret in ("ca.key", "server.key"):
        assert (out / secret).stat().st_mode & 0o777 == 0o600
    assert (out / "ca.crt").stat().st_mode & 0o777 == 0o644


def test_existing_material_is_never_overwritten(tmp_path):
    out = tmp_path / "certs"
    assert _certs("--out", str(out), "--supernodes", "1").returncode == 0
    before = (out / "server.key").read_bytes()
    again = _certs("--out", str(out), "--supernodes", "1")
    assert again.returncode == 1 and "exists; pass --force" in again.stderr
    assert (out / "server.key").read_bytes() == before
    assert _certs("--out", str(out), "--supernodes", "1", "--force").returncode == 0
    assert (out / "server.key").read_bytes() != before


def _load_certs_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("certs", ROOT / "scripts" / "certs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_accepts_fresh_material_and_names_every_problem(tmp_path):
    import datetime as dt

    certs = _load_certs_module()
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        assert _certs("--out", str(out), "--supernodes", "0", "--san", "localhost").returncode == 0
    assert certs.check(a / "ca.crt", a / "server.pem", a / "server.key", "localhost") == []
    # expired: the same files, a year and a day later
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=366)
    problems = certs.check(a / "ca.crt", a / "server.pem", a / "server.key", "localhost", later)
    assert any("server certificate expired on" in p for p in problems)
    # another CA, another key, a name the certificate does not carry
    (problem,) = certs.check(b / "ca.crt", a / "server.pem", None, "localhost")
    assert "was not signed by the CA" in problem
    (problem,) = certs.check(a / "ca.crt", a / "server.pem", b / "server.key", "localhost")
    assert "is not the key of" in problem
    (problem,) = certs.check(a / "ca.crt", a / "server.pem", None, "10.0.0.9")
    assert "does not name '10.0.0.9'" in problem
    assert certs.check(a / "ca.crt", a / "server.pem", None, "0.0.0.0") == []


def test_deploy_refuses_unusable_tls_files_before_starting_anything(tmp_path):
    certs_dir = tmp_path / "certs"
    assert (
        _certs("--out", str(certs_dir), "--supernodes", "0", "--san", "localhost").returncode == 0
    )
    done = subprocess.run(
        [
            sys.executable,
            "scripts/deploy.py",
            "--certs",
            str(certs_dir),
            "--state",
            str(tmp_path / "state"),
            "--fleet-address",
            "10.0.0.9:9092",
            "superlink",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "TLS files unusable" in done.stderr and "does not name '10.0.0.9'" in done.stderr
    assert "--force" in done.stderr
    assert not (tmp_path / "state" / "pids").exists()  # nothing was started
