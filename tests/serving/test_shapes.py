"""Input shapes: bucket padding for tile-safe models (the answer within the stated tolerance of the unpadded one), the
bound on the shapes a shape-compiling session holds (generations: rebuilt, counted, freed, still correct), the
off switches, and metrics whose labels stay bounded."""

from __future__ import annotations

import io
import threading
import urllib.error
import urllib.request
import weakref
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as tg
from PIL import Image
from skimage import data

from ganserve.core.contract import CARD_FILE, CONFIG_FILE, MODEL_FILE, ModelCard, TensorSpec, triton_config
from ganserve.pipeline.cli import main
from ganserve.serving import runtime, server as server_module
from ganserve.serving.imaging import (BUCKETS, bucket_size, decode_image, from_layout, pad_to_bucket, pad_to_multiple,
                                      to_layout, to_pixels, to_tensor)
from ganserve.serving.model_manager import TILE_SAFE_SHAPES
from ganserve.serving.runtime import OrtRunner, RunnerPool, RuntimeSettings
from ganserve.serving.server import ServerThread
from local_server import chosen_runner, server_config
from test_imaging import png_bytes
from test_tiling import sr_model

OV = "OpenVINOExecutionProvider"
HAS_OV = OV in ort.get_available_providers()
NO_OV = "this onnxruntime build has no OpenVINO provider (the shape bound applies to OpenVINO/CUDA sessions only)"
RADIUS = 3  # sr_model: three 3x3 convs with zero padding, so 3 input pixels of receptive radius
SCALE = 2
# The stated tolerance of a bucketed answer against the unpadded one, for sr_model (random weights, values in [-1, 1])
# on photo crops, by distance in input pixels from the bottom/right edge: at 0, 1 and 2 px the largest differences
# measured over 150 random crops of 8..128 px a side were 1.53, 0.75 and 0.33 (the unpadded run's edge sees zeros, the
# bucketed one the reflected picture); from RADIUS on, none (bit-exact), on the CPU and the OpenVINO provider alike.
BAND_TOLERANCE = (1.6, 0.8, 0.35)
BOUND = 3  # --max-compiled-shapes of the served models below


def photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A crop of a real photo as (1, 3, H, W) float32 in [-1, 1]."""
    y0, x0 = np.random.default_rng(seed).integers(0, 512 - 130, 2)
    crop = data.astronaut()[y0 : y0 + height, x0 : x0 + width].astype(np.float32) / 127.5 - 1.0
    return np.ascontiguousarray(crop.transpose(2, 0, 1)[None])


def edge_distance(height: int, width: int) -> np.ndarray:
    """Each output pixel's distance, in input pixels, from the bottom or right edge (whichever is nearer)."""
    rows = (height * SCALE - 1 - np.arange(height * SCALE)) // SCALE
    cols = (width * SCALE - 1 - np.arange(width * SCALE)) // SCALE
    return np.minimum(rows[:, None], cols[None, :])


# -- buckets ---------------------------------------------------------------------------------------------------
def test_bucket_sizes() -> None:
    assert [bucket_size(n) for n in (1, 32, 33, 49, 64, 65, 97, 129, 200, 257, 385, 512, 513, 1000)] == \
        [32, 32, 48, 64, 64, 96, 128, 192, 256, 384, 512, 512, 640, 1024]
    assert [bucket_size(n, 3) for n in (20, 33, 34, 49, 600)] == [33, 33, 48, 66, 642]  # rounded up to 3
    assert [bucket_size(n, 4, 112) for n in (65, 97, 112)] == [96, 112, 112]  # at most the tile
    assert all(bucket_size(n, m) % m == 0 and bucket_size(n, m) >= n for n in range(1, 700) for m in (1, 3, 4, 8))
    # the number of shapes a tile-safe model sees at the default tile (128): 5 sizes per axis up to the tile
    assert sorted({bucket_size(n, 4, 128) for n in range(1, 129)}) == [b for b in BUCKETS if b <= 128]


def test_pad_to_bucket_keeps_the_picture_and_reflects() -> None:
    x = photo(70, 53)
    padded = pad_to_bucket(x, 4)
    assert padded.shape == (1, 3, 96, 64)
    assert np.array_equal(padded[:, :, :70, :53], x)
    assert np.array_equal(padded[:, :, 70:, :53], x[:, :, 68:42:-1])  # reflected about the last row
    assert pad_to_bucket(x, 4, 32).shape == (1, 3, 72, 56)  # both axes longer than the tile: the multiple only
    assert pad_to_bucket(photo(20, 100), 4, 64).shape == (1, 3, 32, 100)  # only the short axis is bucketed
    assert pad_to_bucket(photo(10, 40), 1).shape == (1, 3, 32, 48)  # 22 rows of pad > 10 rows: edge, not reflect
    assert np.array_equal(pad_to_bucket(photo(10, 40), 1)[:, :, 9:, :40], np.repeat(photo(10, 40)[:, :, 9:], 23, 2))
    same = photo(64, 96)
    assert pad_to_bucket(same, 4) is same


@pytest.mark.parametrize("provider", ["CPUExecutionProvider", pytest.param(OV, marks=pytest.mark.skipif(
    not HAS_OV, reason=NO_OV))])
def test_bucketed_answer_is_exact_away_from_the_border_and_within_tolerance_in_it(provider: str) -> None:
    providers = list(dict.fromkeys([provider, "CPUExecutionProvider"]))
    session = ort.InferenceSession(sr_model(SCALE, seed=3), providers=providers)
    worst = [0.0] * RADIUS
    for seed, (h, w) in enumerate([(70, 53), (97, 101), (33, 120), (20, 45), (128, 65), (41, 77)]):
        x = photo(h, w, seed)
        want = session.run(None, {"x": x})[0]
        got = session.run(None, {"x": pad_to_bucket(x, 4)})[0][:, :, : h * SCALE, : w * SCALE]
        diff = np.abs(got - want)[0].max(axis=0)
        distance = edge_distance(h, w)
        assert np.array_equal(got[..., distance >= RADIUS], want[..., distance >= RADIUS]), (h, w)
        for d in range(RADIUS):
            worst[d] = max(worst[d], float(diff[distance == d].max()))
    print(f"{provider}: max |bucketed - unpadded| at 0, 1, 2 input px from the edge: {worst}")
    assert all(w <= t for w, t in zip(worst, BAND_TOLERANCE)), worst
    assert worst[0] > 0  # the band really differs: the check bites


# -- a real server: buckets on and off, the shape bound --------------------------------------------------------
def card(name: str, tile_safe: bool) -> ModelCard:
    return ModelCard(name=name, task="super_resolution", architecture="conv-x2", scale=SCALE, spatial_multiple=4,
                     tile_safe=tile_safe, inputs=[TensorSpec("x", [3, -1, -1], value_range=[-1, 1])],
                     outputs=[TensorSpec("y", [3, -1, -1], value_range=[-1, 1])])


CARDS = {"sr-buckets": card("sr-buckets", True), "sr-exact": card("sr-exact", False)}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """Both models with the OpenVINO provider pinned where this build has it (else CPU), at most BOUND shapes."""
    repo = tmp_path_factory.mktemp("shapes") / "repo"
    for name, c in CARDS.items():
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "1" / MODEL_FILE).write_bytes(sr_model(SCALE, seed=3))
        (repo / name / CARD_FILE).write_text(c.to_json())
        (repo / name / CONFIG_FILE).write_text(triton_config(c))
    cfg = server_config(repo)
    cfg.runtime.providers = ["openvino"] if HAS_OV else ["cpu"]
    cfg.runtime.max_compiled_shapes = BOUND
    cfg.images.buckets = True  # what --buckets sets
    thread = ServerThread(cfg)
    thread.start()
    yield thread
    thread.stop()


def post(thread: ServerThread, name: str, rgb: np.ndarray, query: str = "") -> np.ndarray:
    request = urllib.request.Request(f"http://127.0.0.1:{thread.http_port}/v1/models/{name}/transform{query}",
                                     data=png_bytes(rgb))
    with urllib.request.urlopen(request, timeout=60) as reply:
        return np.asarray(Image.open(io.BytesIO(reply.read())).convert("RGB")).astype(int)


def scrape(thread: ServerThread) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{thread.metrics_port}/metrics", timeout=10).read().decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith(("ganserve_compiled_shapes", "ganserve_shape_evictions"))}


def gauge(thread: ServerThread, name: str) -> float:
    return scrape(thread)[f'ganserve_compiled_shapes{{model="{name}"}}']


def evictions(thread: ServerThread, name: str) -> float:
    return scrape(thread)[f'ganserve_shape_evictions_total{{model="{name}"}}']


def unpadded(thread: ServerThread, name: str, rgb: np.ndarray) -> np.ndarray:
    """The reply without buckets, in process: padded to the multiple (4) only, one run, cropped, 8-bit."""
    spec_in, spec_out = CARDS[name].inputs[0], CARDS[name].outputs[0]
    x = to_tensor(decode_image(png_bytes(rgb), 1 << 30), spec_in)
    y = from_layout(chosen_runner(thread, name).run({"x": to_layout(pad_to_multiple(x, 4), spec_in)})["y"], spec_out)
    return to_pixels(y[:, :, : x.shape[2] * SCALE, : x.shape[3] * SCALE], spec_out).astype(int)


SIZES = [(70, 65), (90, 80), (66, 94), (96, 96)]  # all in the 96x96 bucket; four shapes without buckets


def rgb_of(h: int, w: int, seed: int) -> np.ndarray:
    return np.rint((photo(h, w, seed)[0].transpose(1, 2, 0) + 1) * 127.5).astype(np.uint8)


def test_buckets_give_one_shape_within_tolerance_and_no_buckets_the_exact_answer(served) -> None:
    name = "sr-buckets"
    before_shapes, before_evictions = gauge(served, name), evictions(served, name)
    levels = [b * 255 / 2 + 1 for b in BAND_TOLERANCE]  # the tolerance in 8-bit levels of the [-1, 1] range
    for seed, (h, w) in enumerate(SIZES):
        rgb = rgb_of(h, w, seed)
        got, want = post(served, name, rgb, "?tile_size=0"), unpadded(served, name, rgb)
        distance = edge_distance(h, w)
        assert got.shape == want.shape == (h * SCALE, w * SCALE, 3)
        assert np.array_equal(got[distance >= RADIUS], want[distance >= RADIUS])
        for d in range(RADIUS):
            assert np.abs(got[distance == d] - want[distance == d]).max() <= levels[d]
    if HAS_OV:  # one bucket shape (96x96) beside the load-time one (64x64): no rebuild
        assert gauge(served, name) <= before_shapes + 1 and evictions(served, name) == before_evictions
    served.config.images.buckets = False  # the default (no --buckets), on the running server
    try:
        for seed, (h, w) in enumerate(SIZES):
            rgb = rgb_of(h, w, seed)
            assert np.array_equal(post(served, name, rgb, "?tile_size=0"), unpadded(served, name, rgb))
    finally:
        served.config.images.buckets = True
    if HAS_OV:  # a tile-safe model's bound is TILE_SAFE_SHAPES x the flag's (its image-API shapes are tile-sized)
        assert evictions(served, name) == before_evictions
        assert served.server.models.get(name)[1].runner.max_shapes == TILE_SAFE_SHAPES * BOUND


@pytest.mark.skipif(not HAS_OV, reason=NO_OV)
def test_raw_model_infer_with_ever_new_shapes_cannot_grow_a_tile_safe_model(served) -> None:
    name = "sr-buckets"
    _, version = served.server.models.get(name)
    start = evictions(served, name)
    client = tg.InferenceServerClient(f"127.0.0.1:{served.port}")
    try:
        for i in range(TILE_SAFE_SHAPES * BOUND + 2):
            x = np.random.default_rng(i).uniform(-1, 1, (1, 3, 8 + i, 12)).astype(np.float32)
            tensor = tg.InferInput("x", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            got = client.infer(name, [tensor]).as_numpy("y")
            np.testing.assert_array_equal(got, chosen_runner(served, name).run({"x": x})["y"])
            assert gauge(served, name) <= TILE_SAFE_SHAPES * BOUND
    finally:
        client.close()
    assert evictions(served, name) - start >= 1 and evictions(served, name) == version.runner.evictions


@pytest.mark.skipif(not HAS_OV, reason=NO_OV)
def test_the_shape_bound_holds_rebuilds_are_counted_and_answers_stay_exact(served) -> None:
    name = "sr-exact"
    _, version = served.server.models.get(name)
    assert version.runner.provider == OV and version.runner.max_shapes == BOUND
    start = evictions(served, name)
    seen = []
    for i in range(8):  # eight new shapes (not tile-safe: padded to the multiple only), then one again
        h, w = 36 + 8 * i, 60 - 4 * i
        rgb = rgb_of(h, w, i)
        assert np.array_equal(post(served, name, rgb), unpadded(served, name, rgb))
        seen.append(gauge(served, name))
    assert max(seen) <= BOUND and min(seen) >= 1
    assert evictions(served, name) - start >= 2 and evictions(served, name) == version.runner.evictions
    client = tg.InferenceServerClient(f"127.0.0.1:{served.port}")
    try:  # raw ModelInfer with arbitrary shapes goes through the same bound
        for h, w in [(13, 17), (21, 9), (30, 30)]:
            x = np.random.default_rng(h).uniform(-1, 1, (1, 3, h, w)).astype(np.float32)
            tensor = tg.InferInput("x", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            got = client.infer(name, [tensor]).as_numpy("y")
            np.testing.assert_array_equal(got, chosen_runner(served, name).run({"x": x})["y"])
            assert gauge(served, name) <= BOUND
    finally:
        client.close()


def test_metric_labels_are_the_served_models_only(served) -> None:
    for i in range(4):
        request = urllib.request.Request(f"http://127.0.0.1:{served.http_port}/v1/models/nope-{i}/transform",
                                         data=png_bytes(rgb_of(40, 40, i)))
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(request, timeout=30)
    labels = {key.split('model="')[1].split('"')[0] for key in scrape(served)}
    assert labels == set(CARDS)


# -- the runner itself ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("runner") / "sr.onnx"
    path.write_bytes(sr_model(SCALE, seed=3))
    return path


@pytest.mark.skipif(not HAS_OV, reason=NO_OV)
def test_concurrent_runs_keep_the_bound_and_old_sessions_are_freed(model_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    runner = OrtRunner(model_path, RuntimeSettings(providers=["openvino"], intra_op_threads=1, max_compiled_shapes=2))
    reference = OrtRunner(model_path, RuntimeSettings(providers=["cpu"], intra_op_threads=1))
    assert runner.provider == OV and reference.compiled_shapes == 0 and reference.max_shapes == 0
    sessions = [weakref.ref(runner.session)]
    opened = runner._open

    def open_counted() -> ort.InferenceSession:
        session = opened()
        sessions.append(weakref.ref(session))
        return session

    trims: list[int] = []
    monkeypatch.setattr(runner, "_open", open_counted)
    monkeypatch.setattr(runtime, "trim", lambda: trims.append(1))
    shapes = [(1, 3, 8 + 4 * i, 12) for i in range(6)] + [(2, 3, 8, 12)]  # the batch axis counts too
    over, failures = [], []

    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(12):
            x = rng.uniform(-1, 1, shapes[rng.integers(len(shapes))]).astype(np.float32)
            try:
                np.testing.assert_allclose(runner.run({"x": x})["y"], reference.run({"x": x})["y"], atol=1e-4)
            except AssertionError as exc:
                failures.append(exc)
            if runner.compiled_shapes > 2:
                over.append(runner.compiled_shapes)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures and not over
    assert runner.evictions >= 2 and len(sessions) == runner.evictions + 1
    assert [ref() is not None for ref in sessions].count(True) == 1  # only the serving session is left
    assert len(trims) == runner.evictions  # each dropped session was followed by a trim


@pytest.mark.skipif(not HAS_OV, reason=NO_OV)
def test_a_failed_rebuild_keeps_serving_on_the_old_session(model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = OrtRunner(model_path, RuntimeSettings(providers=["openvino"], intra_op_threads=1, max_compiled_shapes=1))
    runner.run({"x": np.zeros((1, 3, 8, 8), np.float32)})

    def broken() -> ort.InferenceSession:
        raise MemoryError("no room for a second session")

    monkeypatch.setattr(runner, "_open", broken)
    assert runner.run({"x": np.zeros((1, 3, 12, 8), np.float32)})["y"].shape == (1, 3, 24, 16)
    assert runner.evictions == 0 and runner.compiled_shapes == 2  # past the bound, said in the log


def test_cpu_sessions_are_not_bounded_and_pools_sum_their_sessions(model_path: Path) -> None:
    settings = RuntimeSettings(providers=["cpu"], intra_op_threads=1, max_compiled_shapes=1)
    pool = RunnerPool([OrtRunner(model_path, settings), OrtRunner(model_path, settings)])
    for i in range(4):
        pool.run({"x": np.zeros((1, 3, 8 + i, 8), np.float32)})
    assert pool.compiled_shapes == 0 and pool.evictions == 0 and pool.runners[0].max_shapes == 0
    calls: list[int] = []
    pool.on_evict = lambda: calls.append(1)
    assert all(r.on_evict is pool.on_evict for r in pool.runners)


def test_the_flags_reach_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    configs = []
    monkeypatch.setattr(server_module, "serve", lambda config: configs.append(config) or 0)
    assert main(["serve", "--repo", str(tmp_path), "--no-cache"]) == 0
    assert main(["serve", "--repo", str(tmp_path), "--no-cache", "--buckets", "--max-compiled-shapes", "5"]) == 0
    assert [(c.images.buckets, c.runtime.max_compiled_shapes) for c in configs] == [(False, 16), (True, 5)]
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--repo", str(tmp_path), "--max-compiled-shapes", "-1"])
    assert exc.value.code == 2
