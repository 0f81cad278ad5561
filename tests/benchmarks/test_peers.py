"""The bench's peer servers: the batch forward they share, their server files, the LitServe lock, the peer ratio
table, and the real LitServe peer serving a tiny TorchScript network (skipped where its venv cannot be made)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ganserve.benchmarks import peer_forward, peer_litserve, peer_torchserve, peers, report
from ganserve.benchmarks.loadgen import closed_loop

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_ts(tmp_path_factory) -> Path:
    """A tiny x2 upscaler (conv + pixel shuffle) as TorchScript, traced like the bench traces its networks."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 12, 3, padding=1), torch.nn.PixelShuffle(2)).eval()
    example = np.random.default_rng(0).random((1, 3, 16, 16), dtype=np.float32)
    return peers.write_torchscript(net, example, tmp_path_factory.mktemp("ts") / "tiny.ts")


def test_a_batch_runs_as_one_forward_and_splits_back_in_request_order(tiny_ts: Path) -> None:
    model = peer_forward.load_model(str(tiny_ts))
    rng = np.random.default_rng(1)
    arrays = [rng.random((1, 3, 16, 16), dtype=np.float32), rng.random((1, 3, 8, 8), dtype=np.float32),
              rng.random((1, 3, 16, 16), dtype=np.float32)]
    calls = []

    def counting(x):
        calls.append(x.shape[0])
        return model(x)

    batched = peer_forward.forward_batch(counting, arrays, False)
    assert sorted(calls) == [1, 2]  # the two 16x16 requests share one forward
    for x, y in zip(arrays, batched):
        alone = peer_forward.forward_batch(model, [x], False)[0]
        assert y.shape == (1, 3, 2 * x.shape[2], 2 * x.shape[3]) and y.dtype == np.float32
        np.testing.assert_allclose(y, alone, rtol=1e-5, atol=1e-5)


def test_npy_codec_round_trips() -> None:
    x = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4)
    np.testing.assert_array_equal(peer_forward.from_npy(peer_forward.to_npy(x)), x)


@pytest.mark.parametrize("body", [peer_torchserve.HANDLER, peer_litserve.SERVER], ids=["torchserve", "litserve"])
def test_each_peer_server_file_is_the_shared_forward_then_its_own_code(body: str) -> None:
    source = peers.server_source(body)
    compile(source, "peer_server.py", "exec")
    assert source.startswith(Path(peer_forward.__file__).read_text())
    assert "forward_batch(self.model" in body and "bf16_from_env()" in body


def test_the_litserve_locks_pin_litserve_0_2_and_cpu_torch_with_hashes() -> None:
    x86 = peers.peer_lock("litserve", "x86_64").read_text()
    arm = peers.peer_lock("litserve", "aarch64").read_text()
    assert peers.peer_lock("litserve", "amd64").name == "litserve-x86_64.txt"
    for text in (x86, arm):
        pins = {line.split("==")[0]: line.split("==")[1].split()[0] for line in text.splitlines() if "==" in line
                and not line.startswith((" ", "#"))}
        assert pins["litserve"].startswith("0.2.")
        assert "--hash=sha256:" in text and "numpy" in pins
    assert "torch==2.13.0+cpu" in x86 and "\ntorch==" not in arm  # aarch64: installed by version from WHEELS


def test_the_report_sets_ganserve_against_each_peer_with_the_targets() -> None:
    def row(path: str, size: int, conc: int, img_s: float, p50: float) -> dict:
        return {"path": path, "size": size, "batch": 1, "concurrency": conc, "images_per_s": float(img_s),
                "p50_ms": p50}

    rows = [row("oip-raw", 64, 1, 90, 10.0), row("oip-raw", 64, 16, 100, 150.0),
            row("peer-litserve", 64, 1, 40, 25.0), row("peer-litserve", 64, 16, 40, 400.0),
            row("peer-torchserve", 64, 1, 50, 19.0), row("peer-torchserve", 64, 16, 60, 250.0)]
    ratios = report.peer_ratios(rows, [64], [1, 16])
    by_peer = {q["peer"]: q for q in ratios}
    assert by_peer["peer-litserve"]["throughput_ratio"] == pytest.approx(2.5)
    assert by_peer["peer-litserve"]["p50_ratio"] == pytest.approx(0.4)
    assert by_peer["peer-torchserve"]["throughput_ratio"] == pytest.approx(100 / 60)
    table = "\n".join(report.peer_table(ratios))
    assert "| 64 | peer-litserve | 100.0 | 40.0 | 2.50 (met) | 10.0 | 25.0 | 0.40 (met) |" in table
    assert "1.67 (missed)" in table and "0.53 (missed)" in table
    assert report.peer_table([]) == []


def _venv_and_input(peer: str, tiny_ts: Path) -> tuple[np.ndarray, np.ndarray]:
    """The peer's venv (made from its lock if missing; the test skips where that cannot be done, e.g. offline), a
    16x16 input and what the shared forward answers for it in this process."""
    try:
        peers.ensure_venv(peer, log=lambda m: None)
    except (subprocess.CalledProcessError, RuntimeError, OSError) as exc:
        pytest.skip(f"the {peer} venv cannot be made here (offline?): {exc}")
    x = np.random.default_rng(2).random((1, 3, 16, 16), dtype=np.float32)
    return x, peer_forward.forward_batch(peer_forward.load_model(str(tiny_ts)), [x], False)[0]


def test_the_litserve_peer_serves_batches_of_a_tiny_network(tiny_ts: Path, tmp_path: Path) -> None:
    x, expected = _venv_and_input("litserve", tiny_ts)
    peer = peer_litserve.LitServePeer(tiny_ts, tmp_path / "ls", bf16=False, probe_shape=(1, 3, 8, 8),
                                      log=lambda m: None)
    assert "max_batch_size 8" in peer.setting() and "batch_timeout 5 ms" in peer.setting()
    peer.start(timeout=60)
    try:
        np.testing.assert_allclose(peer.post_sync(x), expected, rtol=1e-5, atol=1e-5)

        async def bursts() -> list[tuple[int, int]]:
            send = peer.sender(x, 16)
            first = await closed_loop(send, 16, requests=64, warmup=0)
            await asyncio.sleep(6)  # uvicorn closes keep-alive connections idle for 5 s; the sender reconnects
            second = await closed_loop(send, 16, requests=32, warmup=0)
            return [(len(lat), errors) for lat, errors, _ in (first, second)]

        assert asyncio.run(bursts()) == [(64, 0), (32, 0)]
    finally:
        peer.stop()
    assert peer.proc.poll() is not None


def test_torchserve_with_its_batching_answers_a_burst_correctly(tiny_ts: Path, tmp_path: Path) -> None:
    if not peer_torchserve.has_java():
        pytest.skip("no java on PATH (TorchServe's frontend)")
    x, expected = _venv_and_input("torchserve", tiny_ts)
    peer = peer_torchserve.TorchServePeer(tiny_ts, tmp_path / "ts", bf16=False, batch_size=8, max_batch_delay_ms=5,
                                          log=lambda m: None)
    assert "batch_size 8, max_batch_delay 5 ms" in peer.setting()
    peer.start(timeout=90)
    try:
        np.testing.assert_allclose(peer.post_sync(x), expected, rtol=1e-5, atol=1e-5)

        async def burst() -> tuple[int, int]:
            send = peer.sender(x, 16)
            lat, errors, _ = await closed_loop(send, 16, requests=48, warmup=0)
            return len(lat), errors

        assert asyncio.run(burst()) == (48, 0)
    finally:
        peer.stop()
    assert '"batchSize": 8' in (tmp_path / "ts" / "config.properties").read_text()
    assert peer.proc.poll() is not None and "Traceback" not in peer.log_path.read_text(errors="replace")
