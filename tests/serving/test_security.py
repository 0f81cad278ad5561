"""TLS, mutual TLS and bearer tokens on both protocols, with certificates this test makes (cryptography): tritonclient
works over TLS, plain text to a TLS port fails cleanly, a foreign client certificate is refused, and a call without
an accepted token is UNAUTHENTICATED / 401 with no work done, while health and readiness stay open."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import os
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tg
import tritonclient.http as th
import tritonclient.http.aio as tha
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from ganserve.serving.proto.ganserve.v1 import images_pb2, images_pb2_grpc
from ganserve.serving.security import TlsSettings
from ganserve.serving.server import ServerThread
from local_server import server_config
from test_imaging import png_bytes

TOKEN = "t0ken-for-the-tests-3f9a1c"
PICTURE = png_bytes(np.zeros((8, 8, 3), np.uint8))


# -- certificates ---------------------------------------------------------------------------------------------------
def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _cert(subject: str, key, issuer_name: x509.Name, issuer_key, ca: bool, server: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer_name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(folder: Path, stem: str, cert: x509.Certificate, key) -> tuple[Path, Path]:
    cert_path, key_path = folder / f"{stem}.crt", folder / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """A CA with a server and a client certificate, and a second CA with its own client certificate."""
    folder = tmp_path_factory.mktemp("pki")
    files: dict[str, Path] = {}
    for ca_name in ("ca", "other_ca"):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _cert(f"ganserve test {ca_name}", ca_key, _name(f"ganserve test {ca_name}"), ca_key, ca=True)
        files[ca_name], _ = _write(folder, ca_name, ca_cert, ca_key)
        client_key = ec.generate_private_key(ec.SECP256R1())
        prefix = "" if ca_name == "ca" else "other_"
        files[f"{prefix}client_crt"], files[f"{prefix}client_key"] = _write(
            folder, f"{prefix}client", _cert("a client", client_key, ca_cert.subject, ca_key, ca=False), client_key)
        if ca_name == "ca":
            server_key = ec.generate_private_key(ec.SECP256R1())
            files["server_crt"], files["server_key"] = _write(
                folder, "server", _cert("localhost", server_key, ca_cert.subject, ca_key, ca=False, server=True),
                server_key)
    return files


def _infer_grpc(client: tg.InferenceServerClient, **kw) -> np.ndarray:
    x = tg.InferInput("lr", [1, 3, 4, 4], "FP32")
    x.set_data_from_numpy(np.full((1, 3, 4, 4), 0.5, np.float32))
    return client.infer("sr2", [x], client_timeout=10, **kw).as_numpy("hr")


def _infer_http(client: th.InferenceServerClient, **kw) -> np.ndarray:
    x = th.InferInput("lr", [1, 3, 4, 4], "FP32")
    x.set_data_from_numpy(np.full((1, 3, 4, 4), 0.5, np.float32))
    return client.infer("sr2", [x], **kw).as_numpy("hr")


EXPECTED = np.full((1, 3, 8, 8), 0.5, np.float32)


# -- TLS ------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tls_server(repo, pki):
    thread = ServerThread(server_config(repo, tls=TlsSettings(pki["server_crt"], pki["server_key"])))
    thread.start()
    yield thread
    thread.stop()


def test_tritonclient_over_tls_both_protocols(tls_server, pki) -> None:
    ca = pki["ca"].read_bytes()
    grpc_client = tg.InferenceServerClient(f"127.0.0.1:{tls_server.port}", ssl=True, root_certificates=str(pki["ca"]))
    assert grpc_client.is_server_ready() and np.array_equal(_infer_grpc(grpc_client), EXPECTED)
    http_client = th.InferenceServerClient(f"127.0.0.1:{tls_server.http_port}", ssl=True,
                                           ssl_options={"ca_certs": str(pki["ca"])})
    assert http_client.is_server_ready() and np.array_equal(_infer_http(http_client), EXPECTED)

    async def aio() -> np.ndarray:
        client = tha.InferenceServerClient(f"127.0.0.1:{tls_server.http_port}", ssl=True,
                                           ssl_context=ssl.create_default_context(cadata=ca.decode()))
        try:
            x = tha.InferInput("lr", [1, 3, 4, 4], "FP32")
            x.set_data_from_numpy(np.full((1, 3, 4, 4), 0.5, np.float32))
            return (await client.infer("sr2", [x])).as_numpy("hr")
        finally:
            await client.close()
    assert np.array_equal(asyncio.run(aio()), EXPECTED)
    context = ssl.create_default_context(cadata=ca.decode())
    with urllib.request.urlopen(f"https://127.0.0.1:{tls_server.metrics_port}/metrics", context=context, timeout=10) as r:
        assert b"ganserve_requests_total" in r.read()


def test_plain_text_to_a_tls_port_fails_cleanly(tls_server, pki) -> None:
    plain = tg.InferenceServerClient(f"127.0.0.1:{tls_server.port}")
    with pytest.raises(InferenceServerException) as info:
        _infer_grpc(plain)
    assert info.value.status() == "StatusCode.UNAVAILABLE"
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(f"http://127.0.0.1:{tls_server.http_port}/v2/health/ready", timeout=10).read()
    wrong_ca = tg.InferenceServerClient(f"127.0.0.1:{tls_server.port}", ssl=True,
                                        root_certificates=str(pki["other_ca"]))
    with pytest.raises(InferenceServerException):
        _infer_grpc(wrong_ca)  # the client refuses a server its CA did not sign
    good = tg.InferenceServerClient(f"127.0.0.1:{tls_server.port}", ssl=True, root_certificates=str(pki["ca"]))
    assert np.array_equal(_infer_grpc(good), EXPECTED)  # and the server serves on


@pytest.fixture(scope="module")
def mtls_server(repo, pki):
    thread = ServerThread(server_config(repo, tls=TlsSettings(pki["server_crt"], pki["server_key"], pki["ca"])))
    thread.start()
    yield thread
    thread.stop()


def _grpc_mtls(server, pki, prefix: str | None) -> tg.InferenceServerClient:
    keys = {} if prefix is None else {"private_key": str(pki[f"{prefix}client_key"]),
                                      "certificate_chain": str(pki[f"{prefix}client_crt"])}
    return tg.InferenceServerClient(f"127.0.0.1:{server.port}", ssl=True, root_certificates=str(pki["ca"]), **keys)


def _https_context(pki, prefix: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki["ca"]))
    if prefix is not None:
        context.load_cert_chain(str(pki[f"{prefix}client_crt"]), str(pki[f"{prefix}client_key"]))
    return context


def test_mutual_tls_takes_its_own_clients_and_refuses_others(mtls_server, pki) -> None:
    assert np.array_equal(_infer_grpc(_grpc_mtls(mtls_server, pki, "")), EXPECTED)
    url = f"https://127.0.0.1:{mtls_server.http_port}/v2/health/ready"
    with urllib.request.urlopen(url, context=_https_context(pki, ""), timeout=10) as reply:
        assert reply.status == 200
    for prefix in ("other_", None):  # a certificate of another CA, or none at all
        with pytest.raises(InferenceServerException) as info:
            _infer_grpc(_grpc_mtls(mtls_server, pki, prefix))
        assert info.value.status() == "StatusCode.UNAVAILABLE"
        with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
            urllib.request.urlopen(url, context=_https_context(pki, prefix), timeout=10).read()
    assert np.array_equal(_infer_grpc(_grpc_mtls(mtls_server, pki, "")), EXPECTED)


# -- bearer tokens --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def token_server(repo, tmp_path_factory):
    token_file = tmp_path_factory.mktemp("tokens") / "tokens"
    token_file.write_text(f"# tokens for the tests\n{TOKEN}\nanother-accepted-token-0000\n")
    thread = ServerThread(server_config(repo, auth_token_file=token_file, allow_model_control=True))
    thread.start()
    yield thread
    thread.stop()


def _executions(server) -> int:
    _, version = server.server.models.get("sr2")
    return version.stats.execution_count


BEARER = {"authorization": f"Bearer {TOKEN}"}


def test_grpc_needs_a_token_but_health_is_open(token_server, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="ganserve")
    client = tg.InferenceServerClient(f"127.0.0.1:{token_server.port}")
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("sr2")
    with grpc.insecure_channel(f"127.0.0.1:{token_server.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="sr2"), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        images = images_pb2_grpc.ImagesStub(channel)
        before = _executions(token_server)
        for headers in ({}, {"authorization": "Bearer wrong-token-of-enough-length"}, {"authorization": TOKEN}):
            with pytest.raises(InferenceServerException) as info:
                _infer_grpc(client, headers=headers)
            assert info.value.status() == "StatusCode.UNAUTHENTICATED"
            assert "bearer token" in info.value.message()
            with pytest.raises(grpc.RpcError) as rpc:
                images.Transform(images_pb2.TransformRequest(model="sr2", image=PICTURE), timeout=5,
                                 metadata=tuple(headers.items()))
            assert rpc.value.code() == grpc.StatusCode.UNAUTHENTICATED
        for call in (lambda: client.get_model_metadata("sr2"), lambda: client.load_model("sr2")):
            with pytest.raises(InferenceServerException) as info:
                call()
            assert info.value.status() == "StatusCode.UNAUTHENTICATED"
        assert _executions(token_server) == before  # refused before any work
        assert np.array_equal(_infer_grpc(client, headers=BEARER), EXPECTED)
        assert np.array_equal(_infer_grpc(client, headers={"authorization": "bearer another-accepted-token-0000"}),
                              EXPECTED)
        reply = images.Transform(images_pb2.TransformRequest(model="sr2", image=PICTURE), timeout=5,
                                 metadata=tuple(BEARER.items()))
        assert reply.width == 16
        assert _executions(token_server) == before + 2 + 1
    assert TOKEN not in caplog.text and "wrong-token" not in caplog.text


def test_http_needs_a_token_but_health_is_open(token_server, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="ganserve")
    base = f"http://127.0.0.1:{token_server.http_port}"
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/sr2/ready", "/", "/static/page.js"):
        with urllib.request.urlopen(base + path, timeout=10) as reply:
            assert reply.status == 200, path
    before = _executions(token_server)
    for path, data in (("/v2/models/sr2/infer", b"{}"), ("/v1/models/sr2/transform", PICTURE), ("/v1/models", None),
                       ("/v2/models/sr2", None), ("/v2/repository/models/sr2/load", b""), ("/metrics", None)):
        for headers in ({}, {"Authorization": "Bearer wrong-token-of-enough-length"}):
            request = urllib.request.Request(base + path, data=data, headers=headers)
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(request, timeout=10)
            assert info.value.code == 401, path
            assert info.value.headers["WWW-Authenticate"].startswith("Bearer")
            assert "bearer token" in info.value.read().decode()
    assert _executions(token_server) == before
    client = th.InferenceServerClient(f"127.0.0.1:{token_server.http_port}")
    assert client.is_server_ready()
    with pytest.raises(InferenceServerException) as info:
        _infer_http(client)
    assert info.value.status() == "401"
    assert np.array_equal(_infer_http(client, headers={"Authorization": f"Bearer {TOKEN}"}), EXPECTED)
    request = urllib.request.Request(base + "/v1/models/sr2/transform", data=PICTURE,
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert reply.headers["X-Ganserve-Width"] == "16"
    assert _executions(token_server) == before + 2
    assert TOKEN not in caplog.text and "wrong-token" not in caplog.text


# -- flags ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flags, message", [
    (["--tls-cert", "{server_crt}"], "--tls-cert and --tls-key go together"),
    (["--tls-client-ca", "{ca}"], "--tls-client-ca needs --tls-cert"),
    (["--tls-cert", "{ca}", "--tls-key", "{server_key}"], "TLS files"),  # a key that is not the certificate's
    (["--tls-cert", "{missing}", "--tls-key", "{server_key}"], "TLS files"),
    (["--auth-token-file", "{missing}"], "--auth-token-file"),
    (["--auth-token-file", "{short}"], "at least 16 characters"),
    (["--auth-token-file", "{empty}"], "holds no token"),
    (["--http-port", "70000"], "argument --http-port: must be 0..65535 (or -1 = off), got 70000"),
])
def test_bad_security_flags_are_one_line_errors(flags, message, pki, repo, tmp_path) -> None:
    (tmp_path / "short").write_text("abc\n")
    (tmp_path / "empty").write_text("# nothing\n\n")
    names = {**{k: str(v) for k, v in pki.items()}, "missing": str(tmp_path / "missing.pem"),
             "short": str(tmp_path / "short"), "empty": str(tmp_path / "empty")}
    args = [f.format(**names) for f in flags]
    done = subprocess.run([sys.executable, "-m", "ganserve.pipeline.cli", "serve", "--repo", str(repo), *args],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and message in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_ganserve_client_over_mutual_tls_with_a_token(repo, pki, tmp_path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    (tmp_path / "in.png").write_bytes(PICTURE)
    config = server_config(repo, tls=TlsSettings(pki["server_crt"], pki["server_key"], pki["ca"]),
                           auth_token_file=token_file)
    with ServerThread(config) as thread:
        base = [sys.executable, "-m", "ganserve.pipeline.cli", "client", "--server", f"127.0.0.1:{thread.port}",
                "--timeout", "20", "--tls-ca", str(pki["ca"]), "--tls-cert", str(pki["client_crt"]),
                "--tls-key", str(pki["client_key"])]
        verb = ["transform", str(tmp_path / "in.png"), str(tmp_path / "out.png"), "--model", "sr2"]
        done = subprocess.run([*base, "--token-file", str(token_file), *verb], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        assert "16x16" in done.stdout and (tmp_path / "out.png").read_bytes().startswith(b"\x89PNG")
        refused = subprocess.run([*base, *verb], capture_output=True, text=True, timeout=60,
                                 env={k: v for k, v in os.environ.items() if k != "GANSERVE_TOKEN"})
        assert refused.returncode == 2 and "UNAUTHENTICATED" in refused.stderr and "Traceback" not in refused.stderr
