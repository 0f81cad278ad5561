"""Two ganserve replicas reading one repository behind HAProxy (deploy/haproxy/haproxy.cfg as it is, checking each
replica on grpc.health.v1), under load from tritonclient through the balancer: SIGTERM one replica (its requests
finish, the balancer stops routing to it, no client sees a failure), start it again (it takes traffic once READY),
roll a new model version out to both replicas one after the other (every answer from the old or the new version,
never a mix within one request). Loopback only, bounded in time and in requests."""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as tg
from PIL import Image

from ganserve.serving.client import ImageOptions, ImagesClient
from ganserve.serving.server import Child, start_subprocess
from test_imaging import png_bytes
from versioned_models import FACTORS, expected, write_version

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
X = np.linspace(-1, 1, 3 * 8 * 8, dtype=np.float32).reshape(1, 3, 8, 8)
PICTURE = np.random.default_rng(3).integers(0, 256, (40, 48, 3), dtype=np.uint8)
MAX_REQUESTS = 20_000  # a bound on the whole test's load, whatever the machine's speed


def _haproxy() -> str:
    found = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None)
    if found is None:
        if os.environ.get("GANSERVE_REQUIRE_HAPROXY") == "1":
            pytest.fail("haproxy is not installed (.ci/run installs Debian's haproxy)")
        pytest.skip("haproxy is not installed (apt-get install haproxy); .ci/run installs it")
    return found


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _replica(repo: Path, port: int) -> Child:
    return start_subprocess(repo, ["--port", str(port), "--http-port", "-1", "--metrics-port", "-1",
                                   "--drain-seconds", "2", "--grace-seconds", "10", "--allow-model-control",
                                   "--intra-op-threads", "1"])


def _executions(port: int) -> int:
    stats = tg.InferenceServerClient(f"127.0.0.1:{port}").get_inference_statistics("scaled").model_stats
    return sum(s.execution_count for s in stats)


def _holds(condition) -> bool:
    try:
        return bool(condition())
    except Exception:  # noqa: BLE001  (not up yet)
        return False


def _wait(condition, what: str, seconds: float = 30.0) -> None:
    give_up = time.monotonic() + seconds
    while not _holds(condition):
        if time.monotonic() > give_up:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@dataclass
class Load:
    """Clients through the balancer: OIP requests from three threads, tiled image requests from a fourth."""

    target: str
    sent: int = 0
    answered: int = 0
    failures: list[str] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)  # the version of each answer, in order
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _count(self, version: str | None, failure: str | None) -> bool:
        with self._lock:
            self.sent += 1
            if failure is None:
                self.answered += 1
                self.versions.append(version or "")
            else:
                self.failures.append(failure)
            return self.sent < MAX_REQUESTS

    def _oip(self) -> None:
        client = tg.InferenceServerClient(self.target)
        tensor = tg.InferInput("lr", list(X.shape), "FP32")
        tensor.set_data_from_numpy(X)
        while not self._stop.is_set():
            try:
                reply = client.infer("scaled", [tensor], client_timeout=30)
                version = reply.get_response().model_version
                if not np.array_equal(reply.as_numpy("hr"), expected(X, int(version))):
                    raise AssertionError(f"answer of version {version} is not that version's")
                more = self._count(version, None)
            except Exception as exc:  # noqa: BLE001  (every failure is counted and reported)
                more = self._count(None, f"ModelInfer: {exc}")
            if not more:
                return

    def _image(self) -> None:
        """Tiled requests (6 tiles each): a version swap in the middle of one would show as tiles of two factors."""
        with ImagesClient(self.target, timeout=30) as client:
            data = png_bytes(PICTURE)
            while not self._stop.is_set():
                try:
                    reply = client.transform("scaled", data, options=ImageOptions(tile_size=16, tile_overlap=2))
                    got = np.asarray(Image.open(io.BytesIO(reply.image)).convert("RGB"), np.float64)
                    lo = ((PICTURE.astype(np.float64) / 127.5 - 1) * FACTORS[int(reply.model_version)] + 1) * 127.5
                    want = np.clip(np.rint(lo), 0, 255).repeat(2, 0).repeat(2, 1)
                    if reply.tiles < 6 or np.abs(got - want).max() > 1:
                        raise AssertionError(f"image of version {reply.model_version} mixes versions or is wrong "
                                             f"({reply.tiles} runs, max error {np.abs(got - want).max()})")
                    more = self._count(reply.model_version, None)
                except Exception as exc:  # noqa: BLE001
                    more = self._count(None, f"Transform: {exc}")
                if not more:
                    return

    def start(self) -> "Load":
        self._threads = [threading.Thread(target=self._oip, daemon=True) for _ in range(3)]
        self._threads.append(threading.Thread(target=self._image, daemon=True))
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)


def _stop(child: Child | subprocess.Popen | None) -> None:
    proc = child.proc if isinstance(child, Child) else child
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait(timeout=30)


def test_replicas_behind_haproxy_drain_rejoin_and_roll_out(tmp_path, capsys) -> None:
    haproxy = _haproxy()
    repo = tmp_path / "repo"
    write_version(repo, "scaled", 1)
    port_a, port_b, port_lb = _free_ports(3)
    a = b = lb = None
    load: Load | None = None
    try:
        a, b = _replica(repo, port_a), _replica(repo, port_b)
        env = {**os.environ, "GANSERVE_LB_BIND": f"127.0.0.1:{port_lb}",
               "GANSERVE_REPLICA_1": f"127.0.0.1:{port_a}", "GANSERVE_REPLICA_2": f"127.0.0.1:{port_b}"}
        lb = subprocess.Popen([haproxy, "-f", str(CONFIG), "-db"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
        load = Load(f"127.0.0.1:{port_lb}")
        _wait(lambda: tg.InferenceServerClient(load.target).is_server_ready(), "the balancer to route", 20)
        load.start()
        _wait(lambda: _executions(port_a) > 0 and _executions(port_b) > 0, "both replicas to take traffic")

        # (a) SIGTERM replica A under load
        a.proc.send_signal(signal.SIGTERM)
        time.sleep(1.4)  # A answers NOT_SERVING; the balancer's check (250 ms, 500 ms timeout) takes it out
        routed = _executions(port_a)
        time.sleep(0.4)
        still_routed = _executions(port_a) - routed  # A still accepts for 2 s: this is the balancer's doing
        assert a.proc.wait(timeout=30) == 0
        drained = (load.sent, load.answered, list(load.failures))
        served_by_b = _executions(port_b)
        time.sleep(1.0)
        assert _executions(port_b) > served_by_b  # B carries the load alone

        # (b) start A again on its port: it takes traffic once READY
        a = _replica(repo, port_a)
        _wait(lambda: _executions(port_a) > 0, "the restarted replica to take traffic")
        rejoined = (load.sent, load.answered, list(load.failures))

        # (c) a new version, rolled out to A, then to B, while requests flow
        write_version(repo, "scaled", 2)
        tg.InferenceServerClient(f"127.0.0.1:{port_a}").load_model("scaled")
        time.sleep(1.0)
        tg.InferenceServerClient(f"127.0.0.1:{port_b}").load_model("scaled")
        time.sleep(0.5)  # requests that held version 1 when B swapped are answered by it: let them finish
        mark = len(load.versions)
        time.sleep(1.0)
        load.stop()
        rolled = (load.sent, load.answered, list(load.failures))
        after = load.versions[mark:]
    finally:
        if load is not None:
            load.stop()
        for child in (a, b, lb):
            _stop(child)
    with capsys.disabled():
        print(f"\nreplicas behind haproxy, counts so far after each phase: drain: sent {drained[0]}, answered {drained[1]}, failed {len(drained[2])}; "
              f"rejoin: sent {rejoined[0]}, answered {rejoined[1]}, failed {len(rejoined[2])}; "
              f"roll-out: sent {rolled[0]}, answered {rolled[1]}, failed {len(rolled[2])} "
              f"(answers by version: v1 {load.versions.count('1')}, v2 {load.versions.count('2')})")
    assert drained[2] == [] and rejoined[2] == [] and rolled[2] == [], rolled[2][:5]
    assert still_routed == 0, f"{still_routed} requests reached the draining replica after its check failed"
    assert rolled[1] == rolled[0] and set(load.versions) == {"1", "2"}
    assert after and set(after) == {"2"}  # once both replicas rolled, only the new version answers
