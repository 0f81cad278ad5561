"""Dynamic batcher: batched == unbatched per request on a real ONNX model, shape groups, bounded queue, deadlines."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from ganserve.serving.batcher import (
    Batcher,
    BatcherClosedError,
    BatchingConfig,
    DeadlineExceededError,
    QueueFullError,
)


def conv_model() -> bytes:
    """Two 3x3 convs with a ReLU and a second output (per-image mean), dynamic batch and H/W."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array((rng.standard_normal((6, 3, 3, 3)) / 5).astype(np.float32), "w1")
    w2 = numpy_helper.from_array((rng.standard_normal((3, 6, 3, 3)) / 7).astype(np.float32), "w2")
    axes = numpy_helper.from_array(np.array([1, 2, 3], np.int64), "axes")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["h"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Conv", ["r", "w2"], ["y"], pads=[1, 1, 1, 1]),
        helper.make_node("ReduceMean", ["y", "axes"], ["m"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, "H", "W"]),
            helper.make_tensor_value_info("m", TensorProto.FLOAT, ["N"]),
        ],
        [w1, w2, axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


@pytest.fixture(scope="module")
def session() -> ort.InferenceSession:
    return ort.InferenceSession(conv_model(), providers=["CPUExecutionProvider"])


class Recorder:
    """Observer that keeps every batch it is told about."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, int, list[float]]] = []

    def on_batch(self, model: str, batch_rows: int, queue_seconds: list[float]) -> None:
        self.batches.append((model, batch_rows, queue_seconds))


class GatedRun:
    """A numpy model (y = 2x) whose runs wait for ``release``; records every batch it receives."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.calls: list[np.ndarray] = []

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls.append(feeds["x"].copy())
        self.started.set()
        self.release.wait(10)
        return {"y": feeds["x"] * 2}

    async def wait_started(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.started.wait, 5)


def ort_run(session: ort.InferenceSession):
    names = [o.name for o in session.get_outputs()]
    return lambda feeds: dict(zip(names, session.run(None, feeds), strict=True))


def images(seed: int, rows: int, h: int = 16, w: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (rows, 3, h, w)).astype(np.float32)


def test_batched_results_equal_unbatched(session: ort.InferenceSession) -> None:
    recorder = Recorder()
    requests = [images(i, rows) for i, rows in enumerate([1, 2, 1, 3, 1])]

    async def scenario() -> list[dict[str, np.ndarray]]:
        batcher = Batcher(ort_run(session), BatchingConfig(max_batch_size=8, max_queue_delay_us=200_000), "m", recorder)
        answers = await asyncio.gather(*(batcher.submit({"x": x}) for x in requests))
        await batcher.close()
        return answers

    answers = asyncio.run(scenario())
    assert [rows for _, rows, _ in recorder.batches] == [8]  # all five requests shared one run
    assert recorder.batches[0][0] == "m" and len(recorder.batches[0][2]) == 5
    assert all(0 <= q < 5 for q in recorder.batches[0][2])
    for x, answer in zip(requests, answers, strict=True):
        y, m = session.run(None, {"x": x})
        assert answer["y"].shape == (len(x), 3, 16, 16) and answer["m"].shape == (len(x),)
        np.testing.assert_array_equal(answer["y"], y)
        np.testing.assert_array_equal(answer["m"], m)


def test_mixed_sizes_under_concurrency_each_get_their_own_result(session: ort.InferenceSession) -> None:
    recorder = Recorder()
    shapes_per_run: list[tuple[int, ...]] = []
    run = ort_run(session)

    def recording_run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        shapes_per_run.append(feeds["x"].shape)
        return run(feeds)

    rng = np.random.default_rng(7)
    sizes = [(16, 16), (24, 8), (8, 32)]
    requests = [images(i, int(rng.integers(1, 4)), *sizes[int(rng.integers(0, 3))]) for i in range(30)]

    async def scenario() -> list[dict[str, np.ndarray]]:
        batcher = Batcher(recording_run, BatchingConfig(max_batch_size=6, max_queue_delay_us=5_000), "m", recorder)

        async def client(index: int) -> dict[str, np.ndarray]:
            await asyncio.sleep(float(rng.uniform(0, 0.02)))
            return await batcher.submit({"x": requests[index]})

        answers = await asyncio.gather(*(client(i) for i in range(len(requests))))
        await batcher.close()
        return answers

    answers = asyncio.run(scenario())
    for x, answer in zip(requests, answers, strict=True):
        np.testing.assert_array_equal(answer["y"], session.run(None, {"x": x})[0])
    assert sum(rows for _, rows, _ in recorder.batches) == sum(len(x) for x in requests)
    assert len(shapes_per_run) < len(requests)  # some requests were merged
    assert all(shape[0] <= 6 for shape in shapes_per_run)


def test_full_queue_refuses_at_once() -> None:
    gated = GatedRun()

    async def scenario() -> None:
        batcher = Batcher(gated, BatchingConfig(max_batch_size=1, max_queue_size=2, max_queue_delay_us=0), "m")
        first = asyncio.create_task(batcher.submit({"x": np.ones((1, 2), np.float32)}))
        await gated.wait_started()  # the worker holds the first request in its run
        queued = [asyncio.create_task(batcher.submit({"x": np.full((1, 2), v, np.float32)})) for v in (2, 3)]
        await asyncio.sleep(0.01)
        assert batcher.queue_depth() == 2
        began = time.monotonic()
        with pytest.raises(QueueFullError, match="queue is full"):
            await batcher.submit({"x": np.zeros((1, 2), np.float32)})
        assert time.monotonic() - began < 0.5  # raised before any await
        gated.release.set()
        results = await asyncio.gather(first, *queued)
        assert [float(r["y"][0, 0]) for r in results] == [2.0, 4.0, 6.0]
        assert batcher.queue_depth() == 0
        await batcher.close()

    asyncio.run(scenario())
    assert len(gated.calls) == 3  # the refused request never ran


def test_expired_requests_never_run() -> None:
    gated = GatedRun()

    async def scenario() -> None:
        batcher = Batcher(gated, BatchingConfig(max_batch_size=4, max_queue_delay_us=0), "m")
        first = asyncio.create_task(batcher.submit({"x": np.ones((1, 2), np.float32)}))
        await gated.wait_started()
        began = time.monotonic()
        with pytest.raises(DeadlineExceededError, match="while queued"):
            await batcher.submit({"x": np.full((1, 2), 7, np.float32)}, deadline=time.monotonic() + 0.05)
        assert 0.04 <= time.monotonic() - began < 1.0  # answered at its deadline, not when the worker got free
        with pytest.raises(DeadlineExceededError, match="before"):
            await batcher.submit({"x": np.full((1, 2), 8, np.float32)}, deadline=time.monotonic() - 1)
        survivor = asyncio.create_task(
            batcher.submit({"x": np.full((1, 2), 9, np.float32)}, deadline=time.monotonic() + 30)
        )
        await asyncio.sleep(0.01)
        assert batcher.queue_depth() == 1
        gated.release.set()
        assert float((await first)["y"][0, 0]) == 2.0
        assert float((await survivor)["y"][0, 0]) == 18.0
        await batcher.close()

    asyncio.run(scenario())
    ran = sorted(float(v) for call in gated.calls for v in call[:, 0])
    assert ran == [1.0, 9.0]  # the expired requests (7, 8) never reached run


def test_cancelled_caller_is_removed_from_queue() -> None:
    gated = GatedRun()

    async def scenario() -> None:
        batcher = Batcher(gated, BatchingConfig(max_batch_size=4, max_queue_delay_us=0), "m")
        first = asyncio.create_task(batcher.submit({"x": np.ones((1, 2), np.float32)}))
        await gated.wait_started()
        gone = asyncio.create_task(batcher.submit({"x": np.full((1, 2), 5, np.float32)}))
        await asyncio.sleep(0.01)
        gone.cancel()
        await asyncio.sleep(0.01)
        assert batcher.queue_depth() == 0
        gated.release.set()
        await first
        await batcher.close()

    asyncio.run(scenario())
    assert [float(call[0, 0]) for call in gated.calls] == [1.0]


def test_preferred_size_runs_without_waiting_for_the_delay() -> None:
    recorder = Recorder()

    async def scenario() -> float:
        config = BatchingConfig(max_batch_size=8, preferred_batch_sizes=[4], max_queue_delay_us=20_000_000)
        batcher = Batcher(lambda f: {"y": f["x"] + 1}, config, "m", recorder)
        began = time.monotonic()
        await asyncio.gather(*(batcher.submit({"x": np.zeros((1, 2), np.float32)}) for _ in range(4)))
        elapsed = time.monotonic() - began
        await batcher.close()
        return elapsed

    assert asyncio.run(scenario()) < 2.0
    assert [rows for _, rows, _ in recorder.batches] == [4]


def test_partial_batch_waits_for_the_queue_delay() -> None:
    recorder = Recorder()

    async def scenario() -> None:
        batcher = Batcher(lambda f: {"y": f["x"]}, BatchingConfig(max_queue_delay_us=100_000), "m", recorder)
        first = asyncio.create_task(batcher.submit({"x": np.zeros((1, 2), np.float32)}))
        await asyncio.sleep(0.03)
        late = asyncio.create_task(batcher.submit({"x": np.ones((2, 2), np.float32)}))
        await asyncio.gather(first, late)
        await batcher.close()

    asyncio.run(scenario())
    assert [rows for _, rows, _ in recorder.batches] == [3]  # the late request joined within the delay
    assert recorder.batches[0][2][0] >= 0.09  # the oldest waited the full delay


def test_disabled_batching_runs_each_request_alone() -> None:
    sizes: list[int] = []

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        sizes.append(len(feeds["x"]))
        return {"y": feeds["x"] * 3}

    async def scenario() -> list[dict[str, np.ndarray]]:
        batcher = Batcher(run, BatchingConfig(enabled=False, max_queue_delay_us=50_000), "m")
        answers = await asyncio.gather(*(batcher.submit({"x": np.full((2, 1), i, np.float32)}) for i in range(5)))
        await batcher.close()
        return answers

    answers = asyncio.run(scenario())
    assert sizes == [2] * 5
    assert [float(a["y"][1, 0]) for a in answers] == [0.0, 3.0, 6.0, 9.0, 12.0]


def test_oversized_request_runs_alone() -> None:
    sizes: list[int] = []

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        sizes.append(len(feeds["x"]))
        return {"y": feeds["x"]}

    async def scenario() -> None:
        batcher = Batcher(run, BatchingConfig(max_batch_size=4, max_queue_delay_us=50_000), "m")
        big, small = await asyncio.gather(
            batcher.submit({"x": np.zeros((6, 1), np.float32)}), batcher.submit({"x": np.ones((1, 1), np.float32)})
        )
        assert big["y"].shape == (6, 1) and small["y"].shape == (1, 1)
        await batcher.close()

    asyncio.run(scenario())
    assert sorted(sizes) == [1, 6]


def test_run_error_reaches_every_caller_and_batcher_keeps_working() -> None:
    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if np.any(feeds["x"] < 0):
            raise RuntimeError("model rejected input")
        return {"y": feeds["x"]}

    async def scenario() -> None:
        batcher = Batcher(run, BatchingConfig(max_queue_delay_us=50_000), "m")
        outcomes = await asyncio.gather(
            batcher.submit({"x": -np.ones((1, 1), np.float32)}),
            batcher.submit({"x": np.ones((1, 1), np.float32)}),
            return_exceptions=True,
        )
        assert all(isinstance(o, RuntimeError) for o in outcomes)
        assert float((await batcher.submit({"x": np.ones((1, 1), np.float32)}))["y"][0, 0]) == 1.0
        await batcher.close()

    asyncio.run(scenario())


def test_bad_inputs_and_bad_outputs_are_clear_errors() -> None:
    async def scenario() -> None:
        batcher = Batcher(lambda f: {"y": np.zeros((1, 1), np.float32)}, BatchingConfig(max_queue_delay_us=0), "m")
        with pytest.raises(ValueError, match="disagree on the batch size"):
            await batcher.submit({"a": np.zeros((1, 2), np.float32), "b": np.zeros((2, 2), np.float32)})
        with pytest.raises(ValueError, match="no inputs"):
            await batcher.submit({})
        with pytest.raises(ValueError, match="leading batch axis"):
            await batcher.submit({"a": np.zeros((0, 2), np.float32)})
        with pytest.raises(ValueError, match="expected a leading axis of 3 rows"):
            await batcher.submit({"a": np.zeros((3, 2), np.float32)})
        await batcher.close()

    asyncio.run(scenario())
    with pytest.raises(ValueError, match="preferred_batch_sizes"):
        BatchingConfig(max_batch_size=4, preferred_batch_sizes=[8])


def test_close_drains_then_refuses() -> None:
    async def scenario() -> None:
        batcher = Batcher(lambda f: {"y": f["x"] + 1}, BatchingConfig(max_queue_delay_us=10_000_000), "m")
        pending = [asyncio.create_task(batcher.submit({"x": np.full((1, 1), i, np.float32)})) for i in range(3)]
        await asyncio.sleep(0.01)
        began = time.monotonic()
        await batcher.close(drain=True)
        assert time.monotonic() - began < 2.0  # draining does not sit out the 10 s queue delay
        assert [float((await p)["y"][0, 0]) for p in pending] == [1.0, 2.0, 3.0]
        with pytest.raises(BatcherClosedError):
            await batcher.submit({"x": np.zeros((1, 1), np.float32)})

    asyncio.run(scenario())


def test_close_without_drain_fails_queued_and_finishes_running() -> None:
    gated = GatedRun()

    async def scenario() -> None:
        batcher = Batcher(gated, BatchingConfig(max_batch_size=1, max_queue_delay_us=0), "m")
        running = asyncio.create_task(batcher.submit({"x": np.ones((1, 1), np.float32)}))
        await gated.wait_started()
        queued = asyncio.create_task(batcher.submit({"x": np.ones((1, 1), np.float32)}))
        await asyncio.sleep(0.01)
        closing = asyncio.create_task(batcher.close(drain=False))
        with pytest.raises(BatcherClosedError):
            await queued
        gated.release.set()
        await closing
        assert float((await running)["y"][0, 0]) == 2.0

    asyncio.run(scenario())
    assert len(gated.calls) == 1


def test_two_workers_run_batches_concurrently() -> None:
    active, peak = [0], [0]
    lock = threading.Lock()

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.05)
        with lock:
            active[0] -= 1
        return {"y": feeds["x"]}

    async def scenario() -> None:
        batcher = Batcher(run, BatchingConfig(max_batch_size=1, max_queue_delay_us=0, workers=2), "m")
        await asyncio.gather(*(batcher.submit({"x": np.zeros((1, 1), np.float32)}) for _ in range(4)))
        await batcher.close()

    asyncio.run(scenario())
    assert peak[0] == 2
