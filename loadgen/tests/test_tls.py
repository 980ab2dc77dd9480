"""The SageMaker target over TLS: the certificate is verified against the host name."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from loadgen.launcher import GeneratorProcess
from loadgen.tests.test_sagemaker import AWS_ENV
from loadgen.tests.util import ROOT, of, request, run_to_end


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for `localhost` (its path and its key's)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _run(certificate, trusted: bool):
    cert, key = certificate
    server = subprocess.Popen(
        [sys.executable, "-m", "loadgen.tests.server", "--tls", str(cert), str(key)],
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        port = int(server.stdout.readline())
        spec = {
            "target": {
                "kind": "sagemaker",
                "region": "eu-west-1",
                "endpoint": "e",
                "endpoint_url": f"https://localhost:{port}",
            },
            "requests": [request()],
            "stages": [{"rate": 20, "duration_s": 1}],
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(AWS_ENV)
        if trusted:
            env["SSL_CERT_FILE"] = str(cert)  # OpenSSL's default verify paths read it.
        with GeneratorProcess(spec, env=env) as gen:
            events = run_to_end(gen)
    finally:
        server.kill()
        server.wait()
    (stage,) = of(events, "stage")
    return stage


def test_https_with_a_trusted_certificate(certificate):
    stage = _run(certificate, trusted=True)
    assert stage["ok"] == 20, stage["errors"]


def test_an_untrusted_certificate_fails_to_connect(certificate):
    stage = _run(certificate, trusted=False)
    assert stage["ok"] == 0 and stage["errors"]["connect"] == 20
