"""Memory admission: the cost model measured at load predicts at least the measured peak on sizes it was not fitted
on; requests that can never fit are refused naming the budget and what would fit; a burst is queued within the
budget; output-pixel cap; the figures in /metrics."""

from __future__ import annotations

import asyncio
import math
import json
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import onnx
import pytest
import tritonclient.grpc as tg
from onnx import TensorProto, helper, numpy_helper

from ganserve.core.contract import CARD_FILE, CONFIG_FILE, MODEL_FILE, ModelCard, TensorSpec, triton_config
from ganserve.core import memory_cost
from ganserve.core.memory_cost import CostModel, card_key, default_cost, measure_cost, run_peak
from ganserve.serving.limits import Limits
from ganserve.serving.runtime import OrtRunner, RuntimeSettings, typical_inputs
from ganserve.serving.server import ServerThread
from local_server import server_config
from test_imaging import png_bytes

CHANNELS = 32


def conv_sr_model() -> onnx.ModelProto:
    """x2 SR with real activations: conv 3->32, relu, nearest x2, conv 32->3 (memory grows with H x W)."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.1, (CHANNELS, 3, 3, 3)).astype(np.float32)
    w2 = rng.normal(0, 0.1, (3, CHANNELS, 3, 3)).astype(np.float32)
    scales = np.array([1, 1, 2, 2], np.float32)
    nodes = [helper.make_node("Conv", ["lr", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("Resize", ["r", "", "scales"], ["u"], mode="nearest"),
             helper.make_node("Conv", ["u", "w2"], ["hr"], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "convsr", [helper.make_tensor_value_info("lr", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("hr", TensorProto.FLOAT, ["N", 3, "H2", "W2"])],
                              [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"),
                               numpy_helper.from_array(scales, "scales")])
    model = helper.make_model(graph)
    model.opset_import[0].version = 17
    model.ir_version = 8
    return model


# The planning tests state the cost in the card: what a run costs differs by CPU and runtime (an OpenVINO on a bf16
# CPU infers in bf16 and takes about half), and the plan, not this machine's figure, is what they test.
STATED = {"base_bytes": 8 * 2**20, "bytes_per_pixel": 1000.0, "source": "stated by the test"}
PROVIDERS = ("CPUExecutionProvider", "OpenVINOExecutionProvider", "CUDAExecutionProvider")


def card(tile_safe: bool = True, name: str = "convsr", stated: bool = False) -> ModelCard:
    memory = {card_key(p, "fp32"): dict(STATED) for p in PROVIDERS} if stated else {}
    return ModelCard(name=name, task="super_resolution", architecture="conv-x2", scale=2, tile_safe=tile_safe,
                     inputs=[TensorSpec("lr", [3, -1, -1], "FP32", role="image", value_range=[0.0, 1.0])],
                     outputs=[TensorSpec("hr", [3, -1, -1], "FP32", role="image", value_range=[0.0, 1.0])],
                     memory=memory)


def write_repo(root: Path, tile_safe: bool = True, name: str = "convsr", stated: bool = False) -> Path:
    folder = root / "repo" / name
    (folder / "1").mkdir(parents=True)
    onnx.save(conv_sr_model(), str(folder / "1" / MODEL_FILE))
    c = card(tile_safe, name, stated)
    (folder / CARD_FILE).write_text(c.to_json())
    (folder / CONFIG_FILE).write_text(triton_config(c))
    return root / "repo"


def test_the_measured_cost_is_at_least_the_peak_on_sizes_it_was_not_fitted_on(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(conv_sr_model(), str(path))
    runner = OrtRunner(path, RuntimeSettings(providers=["cpu"], intra_op_threads=1))
    runner.run(typical_inputs(runner, 16))
    model = measure_cost(runner.run, lambda side: typical_inputs(runner, side), scale=2)
    assert model.source.startswith("measured") and model.bytes_per_pixel > 0
    for side in (224, 320, 448):  # not the probe sides (96, 160): held out
        peak = run_peak(runner.run, typical_inputs(runner, side))
        assert peak is not None and model.working(side * side) >= peak, (side, peak, model)
    # and it is not absurdly loose: within 8x of the largest measured peak
    assert model.working(448 * 448) < 8 * max(peak, 1)


def test_without_proc_the_stated_default_stands_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory_cost, "_PROC", tmp_path / "nothing")
    model = measure_cost(lambda feeds: None, lambda side: {}, scale=4)
    assert model == default_cost(4) and model.bytes_per_pixel == 2048 * 16 and "default" in model.source


def test_largest_side_is_the_largest_that_fits() -> None:
    model = CostModel(10 * 2**20, 1000.0, "test")
    side = model.largest_side(50 * 2**20)
    assert model.working(side * side) <= 50 * 2**20 < model.working((side + 1) ** 2)


def _post(port: int, png: bytes, query: str = "") -> tuple[int, dict | bytes, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models/convsr/transform{query}", data=png)
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, reply.read(), dict(reply.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


@pytest.fixture(scope="module")
def tight(tmp_path_factory):
    """convsr (tile-safe) and convsr-whole (not tile-safe), costs stated in their cards, under a 400 MiB budget."""
    root = tmp_path_factory.mktemp("adm")
    repo = write_repo(root, stated=True)
    write_repo(root, tile_safe=False, name="convsr-whole", stated=True)
    cfg = server_config(repo, limits=Limits(max_memory_mib=400))
    cfg.images.max_output_pixels = 1600 * 1600
    thread = ServerThread(cfg)
    thread.start()
    yield thread
    thread.stop()


def test_untiled_asked_is_tiled_when_it_would_not_fit(tight) -> None:
    picture = png_bytes(np.full((768, 768, 3), 100, np.uint8))
    status, body, headers = _post(tight.http_port, picture, "?tile_size=0")
    assert status == 200, body
    assert int(headers["X-Ganserve-Runs"]) > 1  # the server tiled it although the client asked for no tiling
    assert (int(headers["X-Ganserve-Width"]), int(headers["X-Ganserve-Height"])) == (1536, 1536)
    small = png_bytes(np.full((64, 64, 3), 100, np.uint8))
    assert _post(tight.http_port, small, "?tile_size=0")[2]["X-Ganserve-Runs"] == "1"  # fits: as asked


def test_a_model_that_cannot_tile_is_refused_naming_the_budget_and_what_fits(tight) -> None:
    picture = png_bytes(np.full((768, 768, 3), 100, np.uint8))
    request = urllib.request.Request(f"http://127.0.0.1:{tight.http_port}/v1/models/convsr-whole/transform",
                                     data=picture)
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=60)
    assert info.value.code == 413
    message = json.loads(info.value.read())["error"]
    assert "400 MiB" in message and "--max-memory-mib" in message and "largest input that fits" in message
    side = int(message.split("largest input that fits")[1].split("x")[0].strip(" :about"))
    # the card's stated cost planned it: 8 MiB + (1000 + 12 input + 60 output bytes) per pixel within 400 MiB
    assert side == math.isqrt((400 - 8) * 2**20 // 1072), message
    fits = png_bytes(np.full((side, side, 3), 100, np.uint8))
    request = urllib.request.Request(f"http://127.0.0.1:{tight.http_port}/v1/models/convsr-whole/transform", data=fits)
    with urllib.request.urlopen(request, timeout=60) as reply:
        assert reply.status == 200


def test_the_output_pixel_cap_is_a_clear_refusal(tight) -> None:
    picture = png_bytes(np.full((1000, 900, 3), 100, np.uint8))  # 1800 wide x 2000 high out, cap 1600²
    status, body, _ = _post(tight.http_port, picture)
    assert status == 413 and "--max-output-pixels" in body["error"] and "1800x2000" in body["error"]
    with pytest.raises(Exception) as info:
        x = tg.InferInput("lr", [1, 3, 1200, 1200], "FP32")
        x.set_data_from_numpy(np.zeros((1, 3, 1200, 1200), np.float32))
        tg.InferenceServerClient(f"127.0.0.1:{tight.port}").infer("convsr-whole", [x], client_timeout=60)
    assert "RESOURCE_EXHAUSTED" in str(info.value) and "400 MiB" in str(info.value)


def test_a_burst_waits_for_memory_and_every_request_is_answered(tight) -> None:
    async def burst() -> list[int]:
        import aiohttp
        picture = png_bytes(np.full((320, 320, 3), 100, np.uint8))
        async with aiohttp.ClientSession() as session:
            async def one() -> int:
                async with session.post(f"http://127.0.0.1:{tight.http_port}/v1/models/convsr-whole/transform",
                                        data=picture) as reply:
                    await reply.read()
                    return reply.status
            return await asyncio.gather(*(one() for _ in range(8)))
    assert asyncio.run(burst()) == [200] * 8
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{tight.metrics_port}/metrics", timeout=10).read().decode()
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
              if line.startswith("ganserve_memory")}
    assert values["ganserve_memory_budget_bytes"] == 400 * 2**20
    assert values["ganserve_memory_in_flight_bytes"] == 0
    assert values['ganserve_memory_refused_total{reason="over_budget"}'] >= 1
    assert values['ganserve_memory_refused_total{reason="output_pixels"}'] >= 1
