"""Tiled inference: tile plans, exactness against the untiled run on a real ONNX model, and sharing batches."""

from __future__ import annotations

import asyncio

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from skimage import data

from ganserve.serving.batcher import Batcher, BatchingConfig
from ganserve.serving.tiling import plan_tiles, run_tiled


def sr_model(scale: int, channels: int = 8, seed: int = 0) -> bytes:
    """A fully convolutional xscale model: three 3x3 convs (receptive radius 3 input pixels) and DepthToSpace."""
    rng = np.random.default_rng(seed)
    nodes, weights = [], []

    def conv(source: str, cin: int, cout: int, name: str) -> str:
        w = (rng.standard_normal((cout, cin, 3, 3)) / np.sqrt(cin * 9)).astype(np.float32)
        b = (0.1 * rng.standard_normal(cout)).astype(np.float32)
        weights.extend([numpy_helper.from_array(w, f"{name}_w"), numpy_helper.from_array(b, f"{name}_b")])
        nodes.append(helper.make_node("Conv", [source, f"{name}_w", f"{name}_b"], [name], pads=[1, 1, 1, 1]))
        return name

    nodes.append(helper.make_node("Relu", [conv("x", 3, channels, "c1")], ["r1"]))
    nodes.append(helper.make_node("Relu", [conv("r1", channels, channels, "c2")], ["r2"]))
    last = conv("r2", channels, 3 * scale * scale, "c3")
    nodes.append(helper.make_node("DepthToSpace", [last], ["y"], blocksize=scale, mode="CRD"))
    graph = helper.make_graph(
        nodes,
        "tiny_sr",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, "OH", "OW"])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


@pytest.fixture(scope="module")
def session_x2() -> ort.InferenceSession:
    return ort.InferenceSession(sr_model(2), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    """A 200x264 crop of a real photo as (1, 3, H, W) float32 in [-1, 1]; neither side a multiple of the stride."""
    crop = data.astronaut()[100:300, 150:414].astype(np.float32) / 127.5 - 1.0
    return np.ascontiguousarray(crop.transpose(2, 0, 1)[None])


def psnr(result: np.ndarray, reference: np.ndarray) -> float:
    peak = float(reference.max() - reference.min())
    return float(10 * np.log10(peak**2 / np.mean((result.astype(np.float64) - reference) ** 2)))


def direct(session: ort.InferenceSession):
    async def infer(tile: np.ndarray) -> np.ndarray:
        return session.run(None, {"x": tile})[0]

    return infer


def test_plan_covers_image_with_equal_tiles_shifted_inward() -> None:
    tiles = plan_tiles(300, 200, 128, 16)
    assert tiles == [
        (0, 0, 128, 128), (0, 72, 128, 200),
        (112, 0, 240, 128), (112, 72, 240, 200),
        (172, 0, 300, 128), (172, 72, 300, 200),
    ]  # fmt: skip
    covered = np.zeros((300, 200), int)
    for y0, x0, y1, x1 in tiles:
        covered[y0:y1, x0:x1] += 1
    assert covered.min() == 1


def test_plan_aligns_to_spatial_multiple() -> None:
    tiles = plan_tiles(96, 96, 50, 5, multiple=8)  # tile rounds down to 48, overlap up to 8
    assert sorted({t[0] for t in tiles}) == [0, 40, 48]
    assert all(y1 - y0 == 48 and x1 - x0 == 48 for y0, x0, y1, x1 in tiles)
    assert all(v % 8 == 0 for t in tiles for v in t)


def test_plan_small_image_is_one_tile() -> None:
    assert plan_tiles(100, 60, 128, 16) == [(0, 0, 100, 60)]
    assert plan_tiles(100, 300, 128, 16)[0] == (0, 0, 100, 128)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((300, 300, 32, 32, 1), "overlap 32 must be smaller"),
        ((100, 100, 64, 8, 8), "not a multiple"),
        ((96, 96, 4, 0, 8), "smaller than the model's spatial multiple"),
        ((0, 10, 64, 8, 1), "empty"),
    ],
)
def test_plan_rejects_bad_arguments(args: tuple[int, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_tiles(*args)


def test_tiled_matches_untiled_on_real_image(session_x2: ort.InferenceSession, astronaut: np.ndarray) -> None:
    reference = session_x2.run(None, {"x": astronaut})[0]
    tiled = asyncio.run(run_tiled(astronaut, direct(session_x2), scale=2, tile=64, overlap=16))
    assert tiled.shape == reference.shape == (1, 3, 400, 528)
    assert tiled.dtype == np.float32
    # Away from any overlap only one tile contributes, with weight 1: the values are the untiled ones.
    single = np.zeros((200, 264), int)
    for y0, x0, y1, x1 in plan_tiles(200, 264, 64, 16):
        single[y0:y1, x0:x1] += 1
    mask = np.repeat(np.repeat(single == 1, 2, axis=0), 2, axis=1)
    np.testing.assert_allclose(tiled[0][:, mask], reference[0][:, mask], rtol=0, atol=1e-6)
    # In the overlaps the outer quarter (4 px >= the receptive radius 3) is dropped, so the blend is exact too.
    np.testing.assert_allclose(tiled, reference, rtol=0, atol=1e-5)
    assert psnr(tiled, reference) >= 50.0


def test_overlap_matters_and_feathering_hides_seams(session_x2: ort.InferenceSession, astronaut: np.ndarray) -> None:
    reference = session_x2.run(None, {"x": astronaut})[0]
    seamed = asyncio.run(run_tiled(astronaut, direct(session_x2), scale=2, tile=64, overlap=0))
    assert np.abs(seamed - reference).max() > 0.1  # zero padding at the cuts changes the output there
    assert psnr(seamed, reference) < 40.0
    narrow = asyncio.run(run_tiled(astronaut, direct(session_x2), scale=2, tile=64, overlap=8))
    assert psnr(narrow, reference) >= 50.0  # ramp shorter than ideal still leaves no visible seam


def test_x4_with_spatial_multiple_matches_untiled() -> None:
    session = ort.InferenceSession(sr_model(4, seed=3), providers=["CPUExecutionProvider"])
    image = np.random.default_rng(5).uniform(-1, 1, (1, 3, 96, 72)).astype(np.float32)
    reference = session.run(None, {"x": image})[0]
    tiled = asyncio.run(run_tiled(image, direct(session), scale=4, tile=40, overlap=12, multiple=8))
    assert tiled.shape == (1, 3, 384, 288)
    np.testing.assert_allclose(tiled, reference, rtol=0, atol=1e-5)


def test_small_image_goes_straight_to_infer(session_x2: ort.InferenceSession, astronaut: np.ndarray) -> None:
    shapes: list[tuple[int, ...]] = []

    async def infer(tile: np.ndarray) -> np.ndarray:
        shapes.append(tile.shape)
        return session_x2.run(None, {"x": tile})[0]

    image = np.random.default_rng(0).uniform(-1, 1, (1, 3, 48, 60)).astype(np.float32)
    result = asyncio.run(run_tiled(image, infer, scale=2, tile=64, overlap=16))
    assert shapes == [(1, 3, 48, 60)]
    np.testing.assert_array_equal(result, session_x2.run(None, {"x": image})[0])
    untiled = asyncio.run(run_tiled(image, infer, scale=2, tile=0, overlap=16))
    assert shapes[-1] == (1, 3, 48, 60)
    np.testing.assert_array_equal(untiled, result)
    # tile=0 means no tiling even for an image far larger than any tile: one run of the whole picture, exactly the
    # model's output, and the tiled path agrees with it within the blend's tolerance (test_tiled_matches_untiled...).
    shapes.clear()
    whole = asyncio.run(run_tiled(astronaut, infer, scale=2, tile=0, overlap=16))
    assert shapes == [(1, 3, 200, 264)]
    np.testing.assert_array_equal(whole, session_x2.run(None, {"x": astronaut})[0])
    tiled = asyncio.run(run_tiled(astronaut, infer, scale=2, tile=64, overlap=16))
    assert len(shapes) == 1 + len(plan_tiles(200, 264, 64, 16))
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-5)


def test_tiles_share_batches_with_other_requests(session_x2: ort.InferenceSession, astronaut: np.ndarray) -> None:
    marker = np.full((1, 3, 64, 64), 0.25, np.float32)  # other callers' requests, recognisable in a batch
    batches: list[tuple[int, int]] = []  # (tile rows, marker rows) per run

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = feeds["x"]
        markers = sum(bool(np.all(row == 0.25)) for row in x)
        batches.append((len(x) - markers, markers))
        return {"y": session_x2.run(None, feeds)[0]}

    async def scenario() -> tuple[np.ndarray, list[dict[str, np.ndarray]]]:
        batcher = Batcher(run, BatchingConfig(max_batch_size=8, max_queue_delay_us=20_000), name="x2")

        async def infer(tile: np.ndarray) -> np.ndarray:
            return (await batcher.submit({"x": tile}))["y"]

        others = [batcher.submit({"x": marker}) for _ in range(6)]
        tiled, *answers = await asyncio.gather(
            run_tiled(astronaut, infer, scale=2, tile=64, overlap=16, max_in_flight=8), *others
        )
        await batcher.close()
        return tiled, answers

    tiled, answers = asyncio.run(scenario())
    np.testing.assert_allclose(tiled, session_x2.run(None, {"x": astronaut})[0], rtol=0, atol=1e-5)
    expected = session_x2.run(None, {"x": marker})[0]
    for answer in answers:
        np.testing.assert_array_equal(answer["y"], expected)
    n_tiles = len(plan_tiles(200, 264, 64, 16))
    assert sum(t for t, _ in batches) == n_tiles and sum(m for _, m in batches) == 6
    assert any(t > 0 and m > 0 for t, m in batches), batches  # a tile and another request in one run
    assert all(t + m <= 8 for t, m in batches)


def failing_tile_started(run) -> int:
    """Run `run(image, infer)` on 25 tiles of which the third fails: the error propagates, no task is left behind;
    returns how many tiles ever started."""
    started: list[int] = []

    async def infer(tile: np.ndarray) -> np.ndarray:
        started.append(1)
        if len(started) == 3:
            raise RuntimeError("tile failed")
        await asyncio.sleep(10)
        return np.zeros((1, 3, 128, 128), np.float32)

    async def scenario() -> set[asyncio.Task]:
        image = np.zeros((1, 3, 256, 256), np.float32)
        with pytest.raises(RuntimeError, match="tile failed"):
            await asyncio.wait_for(run(image, infer), 5)
        return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}

    assert asyncio.run(scenario()) == set()
    return len(started)


def test_failing_tile_propagates_and_cancels_the_rest() -> None:
    started = failing_tile_started(lambda image, infer: run_tiled(image, infer, scale=2, tile=64, overlap=8,
                                                                  max_in_flight=4))
    # 25 tiles; only those admitted by max_in_flight (plus the one let in by the failure) ever started.
    assert 4 <= started <= 5


def test_wrong_output_size_is_a_clear_error() -> None:
    async def infer(tile: np.ndarray) -> np.ndarray:
        return np.zeros((1, 3, tile.shape[2], tile.shape[3]), np.float32)

    image = np.zeros((1, 3, 128, 128), np.float32)
    with pytest.raises(ValueError, match=r"not \(1, C, 128, 128\)"):
        asyncio.run(run_tiled(image, infer, scale=2, tile=64, overlap=8))
    with pytest.raises(ValueError, match="float32"):
        asyncio.run(run_tiled(image.astype(np.float64), infer, scale=2, tile=64, overlap=8))


def test_blend_weights_are_the_documented_ramps() -> None:
    """Each tile answers a constant (its first column's x), so the output is the blend itself. Overlap 6 (margin
    6 // 4 = 1, ramp width 6 - 2 = 4): a tile's weight rises 0, 1/8, 3/8, 5/8, 7/8, 1 from its inner edge; over
    16 columns, tiles of 10 start at 0, 4, 6. Column 7, say: (0 * 3/8 + 4 * 5/8 + 6 * 1/8) / (3/8 + 5/8 + 1/8)."""
    image = np.tile(np.arange(16, dtype=np.float32), (1, 1, 8, 1))

    async def constant(x: np.ndarray) -> np.ndarray:
        return np.full((1, 1, *x.shape[2:]), x[0, 0, 0, 0], np.float32)

    out = asyncio.run(run_tiled(image, constant, 1, 10, 6))
    want = [0, 0, 0, 0, 0, 1 / 2, 3 / 2, 26 / 9, 46 / 11, 29 / 6, 31 / 6, 60 / 11, 52 / 9, 6, 6, 6]
    assert plan_tiles(8, 16, 10, 6) == [(0, 0, 8, 10), (0, 4, 8, 14), (0, 6, 8, 16)]
    assert out.shape == (1, 1, 8, 16) and np.allclose(out[0, 0], np.float32(want), atol=1e-6, rtol=0)


def test_default_multiple_is_one_and_bad_model_outputs_are_refused() -> None:
    assert plan_tiles(5, 7, 4, 1) == plan_tiles(5, 7, 4, 1, 1)  # odd sizes need no padding by default
    image = np.zeros((1, 3, 5, 7), np.float32)

    async def identity(x: np.ndarray) -> np.ndarray:
        return x

    assert asyncio.run(run_tiled(image, identity, 1, 4, 1)).shape == (1, 3, 5, 7)
    for bad in (lambda x: np.concatenate([x, x]), lambda x: x[None], lambda x: x[:, :, :-1]):
        async def broken(x: np.ndarray, f=bad) -> np.ndarray:
            return f(x)
        with pytest.raises(ValueError, match="model output shape"):
            asyncio.run(run_tiled(image, broken, 1, 4, 1))
        with pytest.raises(ValueError, match="model output shape"):
            asyncio.run(run_tiled(image, broken, 1, 0, 0))  # untiled too
