"""Operations: health checking, reflection, Prometheus metrics, model control, and the CLI."""

from __future__ import annotations

import io
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from PIL import Image

from ganserve.serving.server import ServerThread
from local_server import server_config
from serving_models import write_model
from test_imaging import png_bytes

ROOT = Path(__file__).resolve().parents[2]


def test_health_overall_and_per_model(server) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        check = lambda name: stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status  # noqa: E731
        assert check("") == health_pb2.HealthCheckResponse.SERVING
        assert check("sr2") == health_pb2.HealthCheckResponse.SERVING
        assert check("broken") == health_pb2.HealthCheckResponse.NOT_SERVING


def test_reflection_lists_and_describes_services(server) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = [reflection_pb2.ServerReflectionRequest(list_services=""),
                    reflection_pb2.ServerReflectionRequest(file_containing_symbol="ganserve.v1.Images")]
        listed, described = list(stub.ServerReflectionInfo(iter(requests), timeout=5))
    names = {s.name for s in listed.list_services_response.service}
    assert {"inference.GRPCInferenceService", "ganserve.v1.Images", "grpc.health.v1.Health"} <= names
    files = described.file_descriptor_response.file_descriptor_proto
    assert files and b"SuperResolve" in files[0]


def test_metrics_count_requests_and_batches(server) -> None:
    client = tc.InferenceServerClient(f"127.0.0.1:{server.port}")
    x = tc.InferInput("pixels", [2, 1, 4, 4], "FP32")
    x.set_data_from_numpy(np.zeros((2, 1, 4, 4), np.float32))
    for _ in range(3):
        client.infer("digits", [x])
    with pytest.raises(Exception):
        client.infer("nope", [x])
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
    lines = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert float(lines['ganserve_requests_total{code="OK",method="ModelInfer",model="digits",protocol="grpc"}']) >= 3
    # a model that is not served is counted under one label for every such name (metrics stay bounded)
    assert float(lines['ganserve_requests_total{code="NOT_FOUND",method="ModelInfer",model="_unknown",protocol="grpc"}']) >= 1
    assert 'model="nope"' not in text
    assert float(lines['ganserve_batch_rows_count{model="digits"}']) >= 3
    assert float(lines['ganserve_batch_rows_sum{model="digits"}']) >= 6
    assert lines['ganserve_queue_depth{model="digits"}'] == "0.0"
    assert lines['ganserve_model_ready{model="broken"}'] == "0.0"


def test_model_control_load_and_unload(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_model(repo, "sr2")
    with ServerThread(server_config(repo, allow_model_control=True)) as thread:
        client = tc.InferenceServerClient(f"127.0.0.1:{thread.port}")
        assert not client.is_model_ready("digits")
        write_model(repo, "digits")
        client.load_model("digits")
        assert client.is_model_ready("digits")
        client.unload_model("sr2")
        assert not client.is_model_ready("sr2")
        index = {m.name: m.state for m in client.get_model_repository_index().models}
        assert index == {"digits": "READY", "sr2": "UNAVAILABLE"}
        with pytest.raises(Exception, match="not in the repository"):
            client.load_model("missing")


def test_cli_client_super_resolves_a_file(server, tmp_path: Path) -> None:
    rgb = np.random.default_rng(3).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    src, dst = tmp_path / "in.png", tmp_path / "out.png"
    src.write_bytes(png_bytes(rgb))
    cmd = [sys.executable, "-m", "ganserve.pipeline.cli", "client", "--server", f"127.0.0.1:{server.port}"]
    done = subprocess.run([*cmd, "sr", str(src), str(dst), "--model", "sr2"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(dst.read_bytes()))), rgb.repeat(2, 0).repeat(2, 1))
    bad = subprocess.run([*cmd, "sr", str(src), str(tmp_path / "x.png"), "--model", "nope"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "NOT_FOUND" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    listed = subprocess.run([*cmd, "list"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "sr2\tv1\tREADY\tsuper_resolution" in listed.stdout


def test_cli_serve_rejects_a_missing_repo(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "ganserve.pipeline.cli", "serve", "--repo", str(tmp_path / "none")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "model repository not found" in done.stderr
