"""deploy/ checked against what can be checked here (no cluster, no container engine): every manifest parses and
loads into the kubernetes client's and the kserve SDK's model classes with no unknown field; each container's
flags are ones `ganserve serve` accepts; ports and probes match the server's; the grace period covers the drain;
the container file runs `ganserve serve` as a non-root user on the mounted repository."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ganserve.pipeline.cli import build_parser
from ganserve.serving.http import HttpFront

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml")) + sorted((DEPLOY / "kserve").glob("*.yaml"))
SDK = Path(sys.prefix) / "kserve-sdk"


def _docs() -> dict[str, dict]:
    found = {}
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            found[doc["kind"]] = doc
    return found


def _serve(args: list[str]):
    """The args as `ganserve serve` parses them (argparse exits 2 on a flag it does not know)."""
    argv = ["serve", *args]
    return build_parser(argv).parse_args(argv)


def test_every_manifest_parses_and_names_its_kind() -> None:
    kinds = sorted(_docs())
    assert kinds == ["ClusterServingRuntime", "Deployment", "HorizontalPodAutoscaler", "InferenceService", "Service"]


def test_manifests_load_into_the_sdk_model_classes(tmp_path: Path) -> None:
    if not (SDK / "kserve").is_dir():
        pytest.fail(f"{SDK} is missing: `make setup` installs the kserve SDK's model classes there")
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("sdk_check.py")), str(SDK),
                           *map(str, MANIFESTS)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "V1alpha1ClusterServingRuntime" in done.stdout and "V1beta1InferenceService" in done.stdout
    assert "V1Deployment" in done.stdout and "V2HorizontalPodAutoscaler" in done.stdout
    typo = tmp_path / "typo.yaml"  # the check can fail: one misspelt field is refused, with its path
    runtime = _docs()["ClusterServingRuntime"]
    runtime["spec"]["containers"][0]["imagePullPolice"] = "Always"
    typo.write_text(yaml.safe_dump(runtime))
    refused = subprocess.run([sys.executable, str(Path(__file__).with_name("sdk_check.py")), str(SDK), str(typo)],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and "containers[0].imagePullPolice: not a field of V1Container" in refused.stdout


def test_deployment_flags_ports_probes_and_grace() -> None:
    docs = _docs()
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = _serve(container["args"])
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert str(args.repo) in mounts and mounts[str(args.repo)]["readOnly"] is True
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": args.port, "http": args.http_port, "metrics": args.metrics_port}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["grpc"]["port"] == args.port  # native gRPC probes on grpc.health.v1
    assert pod["terminationGracePeriodSeconds"] >= args.drain_seconds + args.grace_seconds
    assert args.drain_seconds >= container["readinessProbe"]["periodSeconds"] * 2  # NOT_SERVING is seen first
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert args.host == "0.0.0.0"
    service = docs["Service"]["spec"]
    assert {p["targetPort"] for p in service["ports"]} == set(ports)
    assert service["selector"] == docs["Deployment"]["spec"]["selector"]["matchLabels"]
    hpa = docs["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == docs["Deployment"]["metadata"]["name"]


def _routes() -> set[str]:
    """Every path pattern the HTTP front answers (KServe v2, image API, page, metrics)."""
    from ganserve.serving.call_gate import CallGate
    from ganserve.serving.metrics import ServerMetrics

    gate = CallGate(ServerMetrics())
    front = HttpFront(oip=type("O", (), {"gate": gate})(), images=type("I", (), {"gate": gate})(), gate=gate,
                      max_body_bytes=1)
    return {r.resource.canonical for r in front.app.router.routes() if r.resource is not None}


def test_kserve_runtime_flags_ports_and_probe_path() -> None:
    docs = _docs()
    runtime = docs["ClusterServingRuntime"]["spec"]
    container = runtime["containers"][0]
    args = _serve(container["args"])
    assert str(args.repo) == "/mnt/models"  # where KServe's storage initializer puts the model
    assert container["ports"][0]["containerPort"] == args.http_port == 8080
    probe = container["readinessProbe"]["httpGet"]
    assert probe["port"] == args.http_port and probe["path"] in _routes()
    assert {"v2", "grpc-v2"} <= set(runtime["protocolVersions"])
    assert [f["name"] for f in runtime["supportedModelFormats"]] == ["onnx"]
    service = docs["InferenceService"]["spec"]["predictor"]["model"]
    assert service["runtime"] == docs["ClusterServingRuntime"]["metadata"]["name"]
    assert service["modelFormat"]["name"] == "onnx" and service["protocolVersion"] in runtime["protocolVersions"]


def test_container_file_runs_the_server_as_non_root() -> None:
    text = (DEPLOY / "Containerfile").read_text()
    entry = re.search(r'^ENTRYPOINT \[(.*)\]$', text, re.M)
    cmd = re.search(r'^CMD \[(.*)\]$', text, re.M)
    user = re.search(r"^USER (\S+)$", text, re.M)
    assert entry and cmd and user
    assert [a.strip().strip('"') for a in entry.group(1).split(",")] == ["ganserve", "serve"]
    args = _serve([a.strip().strip('"') for a in cmd.group(1).split(",")])
    assert str(args.repo) == "/mnt/models" and args.host == "0.0.0.0"
    assert user.group(1) not in ("0", "root")
    exposed = {int(p) for p in re.search(r"^EXPOSE (.*)$", text, re.M).group(1).split()}
    assert exposed == {args.port, args.http_port, args.metrics_port}
    for folder in ("ganserve", "serving", "pyproject.toml", "locks"):  # what `pip install .` needs is copied in
        assert re.search(rf"^COPY .*\b{re.escape(folder)}\b", text, re.M), folder
    # a base image pinned by digest, and packages only from the serving locks (no torch: tests/core/test_lock.py)
    assert re.search(r"^FROM python:3\.11[\w.-]*@sha256:[0-9a-f]{64}$", text, re.M)
    installs = re.findall(r"(?:pip|uv pip) install [^\n]*", text)
    assert installs and all("--no-deps" in line for line in installs)
    assert all("--require-hashes" in line or line.rstrip(" \\").endswith(" .") for line in installs), installs
    for lock in re.findall(r"locks/[\w/-]+\.txt", text):
        assert (ROOT / lock).exists() and "serve-" in lock or lock == "locks/bootstrap.txt", lock


def test_haproxy_config_is_valid() -> None:
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(haproxy).exists():
        if os.environ.get("GANSERVE_REQUIRE_HAPROXY") == "1":
            pytest.fail("haproxy is not installed (.ci/run installs Debian's haproxy)")
        pytest.skip("haproxy is not installed (tests/serving/test_replicas.py runs it for real where it is)")
    env = {"GANSERVE_LB_BIND": "127.0.0.1:1", "GANSERVE_REPLICA_1": "127.0.0.1:2", "GANSERVE_REPLICA_2": "127.0.0.1:3"}
    done = subprocess.run([haproxy, "-c", "-f", str(DEPLOY / "haproxy" / "haproxy.cfg")], env=env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    wire = bytes.fromhex("".join(re.findall(r"^\s*tcp-check send-binary (\w+)", (DEPLOY / "haproxy" / "haproxy.cfg")
                                            .read_text(), re.M)))
    assert wire.startswith(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") and b"/grpc.health.v1.Health/Check" in wire
    assert wire.endswith(b"\x00\x00\x05\x00\x01\x00\x00\x00\x01" + b"\x00" * 5)  # DATA, END_STREAM, empty request


def test_the_metrics_scrape_carries_the_token_the_server_requires() -> None:
    """Deployment and ServiceMonitor agree: the server reads the Secret's token, Prometheus sends the same one."""
    deployment, service = _docs()["Deployment"], _docs()["Service"]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = _serve(container["args"])
    mount = next(m for m in container["volumeMounts"] if str(args.auth_token_file).startswith(m["mountPath"] + "/"))
    secret = next(v for v in pod["volumes"] if v["name"] == mount["name"])["secret"]
    key = str(args.auth_token_file)[len(mount["mountPath"]) + 1:]
    monitor = yaml.safe_load((DEPLOY / "prometheus" / "servicemonitor.yaml").read_text())
    assert monitor["kind"] == "ServiceMonitor"
    assert monitor["spec"]["selector"]["matchLabels"] == service["metadata"]["labels"]
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["path"] == "/metrics" and endpoint["authorization"]["type"] == "Bearer"
    assert endpoint["authorization"]["credentials"] == {"name": secret["secretName"], "key": key}
    port = next(p for p in service["spec"]["ports"] if p["name"] == endpoint["port"])
    assert port["port"] == args.metrics_port
