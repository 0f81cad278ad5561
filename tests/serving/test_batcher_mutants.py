"""Batcher behaviour the mutation run (mutation/run.py) found unchecked: which ready group runs first, how a waiting
worker sleeps, batch and config boundaries, who shuts an executor down, and requests dropped or kept while queued."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from ganserve.serving.batcher import Batcher, BatcherClosedError, BatchingConfig, DeadlineExceededError, QueueFullError
from test_batcher import GatedRun, Recorder

SCHEDSTAT = Path("/proc/thread-self/schedstat")


def _cpu_or_runnable_seconds() -> float:
    """This thread's time on a CPU plus its time waiting for one (Linux schedstat): about the wall time while it
    spins, about zero while it sleeps, however busy the other processes keep the machine."""
    on_cpu, waiting, _ = (int(v) for v in SCHEDSTAT.read_text().split())
    return (on_cpu + waiting) / 1e9


def _x(value: float, width: int = 1, rows: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.full((rows, width), value, np.float32)}


class InlineExecutor(Executor):
    """Runs each call at once on the calling thread (for a batcher: the event loop's), so a run holds the loop up."""

    def submit(self, fn: Callable[..., object], /, *args: object, **kwargs: object) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001  (handed to the caller, as a thread pool would)
            future.set_exception(exc)
        return future


def test_ready_shape_groups_run_oldest_request_first() -> None:
    """Among ready shape groups the worker takes the one whose oldest request has waited longest, also when the
    group queued first has had its head taken since (its oldest request is now younger than the other group's)."""
    gated = GatedRun()

    async def scenario() -> None:
        batcher = Batcher(gated, BatchingConfig(max_batch_size=1, max_queue_delay_us=0), "m")
        first = asyncio.create_task(batcher.submit(_x(0.0)))
        await gated.wait_started()
        queued = []
        for value, width in ((1.0, 2), (2.0, 3), (3.0, 2)):  # group A, group B, group A again, in this order
            queued.append(asyncio.create_task(batcher.submit(_x(value, width))))
            await asyncio.sleep(0.005)
        gated.release.set()
        await asyncio.gather(first, *queued)
        await batcher.close()

    asyncio.run(scenario())
    assert [float(call[0, 0]) for call in gated.calls] == [0.0, 1.0, 2.0, 3.0]


@pytest.mark.skipif(not SCHEDSTAT.exists(), reason="needs Linux /proc/thread-self/schedstat")
@pytest.mark.parametrize("delay_us", [400_000, 1_200_000])  # above 1 s, a wake time divided by the delay is past
def test_a_worker_waiting_for_two_groups_sleeps_until_the_first_is_due(delay_us: int) -> None:
    """Two partial shape groups wait for the queue delay: the worker sleeps until the earlier one is due (it does
    not poll meanwhile), and each group then runs once its own delay has passed."""
    recorder = Recorder()

    async def scenario() -> float:
        batcher = Batcher(lambda f: {"y": f["x"]}, BatchingConfig(max_queue_delay_us=delay_us), "m", recorder)
        a = asyncio.create_task(batcher.submit(_x(1.0, 2)))
        await asyncio.sleep(0.01)
        b = asyncio.create_task(batcher.submit(_x(2.0, 3)))
        await asyncio.sleep(0.05)
        before = _cpu_or_runnable_seconds()
        await asyncio.sleep(0.25)  # both groups still inside their 0.4 s delay
        busy = _cpu_or_runnable_seconds() - before
        await asyncio.gather(a, b)
        await batcher.close()
        return busy

    busy = asyncio.run(scenario())
    assert busy < 0.1, f"the loop thread was busy {busy:.3f} s of a 0.25 s wait"
    assert [rows for _, rows, _ in recorder.batches] == [1, 1]
    assert all(seconds[0] >= delay_us / 1e6 - 0.01 for _, _, seconds in recorder.batches)


def test_a_batch_that_exactly_fills_a_large_max_batch_size_runs_at_once() -> None:
    """Two 500-row requests fill max_batch_size=1000 exactly: the batch runs at once, not after the 20 s delay."""
    recorder = Recorder()

    async def scenario() -> list[dict[str, np.ndarray]]:
        config = BatchingConfig(max_batch_size=1000, max_queue_delay_us=20_000_000)
        batcher = Batcher(lambda f: {"y": f["x"] * 2}, config, "m", recorder)
        answers = await asyncio.wait_for(asyncio.gather(batcher.submit(_x(1.0, rows=500)),
                                                        batcher.submit(_x(2.0, rows=500))), 10)
        await batcher.close()
        return answers

    answers = asyncio.run(scenario())
    assert [rows for _, rows, _ in recorder.batches] == [1000]
    assert [a["y"].shape for a in answers] == [(500, 1), (500, 1)]
    assert float(answers[0]["y"].max()) == 2.0 and float(answers[1]["y"].min()) == 4.0


@pytest.mark.parametrize("output", [np.zeros((4, 1), np.float32), np.float32(1.0), np.array(1.0, np.float32)],
                         ids=["one-row-too-many", "numpy-scalar", "0-d-array"])
def test_outputs_without_exactly_the_batch_rows_are_a_clear_error(output: np.ndarray) -> None:
    """A run whose output has more rows than the batch, or no batch axis at all, answers the callers with the
    ValueError that names the expected rows (not an IndexError, and never a silently cut output)."""

    async def scenario() -> None:
        batcher = Batcher(lambda f: {"y": output}, BatchingConfig(max_queue_delay_us=0), "m")
        with pytest.raises(ValueError, match=r"output 'y' has shape .*; expected a leading axis of 3 rows"):
            await batcher.submit(_x(1.0, rows=3))
        await batcher.close()

    asyncio.run(scenario())


def test_one_dimensional_inputs_batch_by_rows() -> None:
    """A (N,) input, such as one class index per image, is a batch of N rows: requests of it are merged into one
    run and each caller gets its own rows back."""
    recorder = Recorder()

    async def scenario() -> list[dict[str, np.ndarray]]:
        config = BatchingConfig(max_batch_size=8, max_queue_delay_us=200_000)
        batcher = Batcher(lambda f: {"y": f["label"] * 10}, config, "m", recorder)
        answers = await asyncio.gather(batcher.submit({"label": np.array([1, 2], np.int64)}),
                                       batcher.submit({"label": np.array([3], np.int64)}))
        await batcher.close()
        return answers

    answers = asyncio.run(scenario())
    assert [a["y"].tolist() for a in answers] == [[10, 20], [30]]
    assert [rows for _, rows, _ in recorder.batches] == [3]


def test_requests_that_differ_only_in_channels_are_not_merged() -> None:
    """The shape key is every axis after the batch axis: a 3-channel and a 1-channel image of the same size queue
    apart and each gets its own result, instead of failing together in one concatenation."""
    recorder = Recorder()
    rgb = np.arange(48, dtype=np.float32).reshape(1, 3, 4, 4)
    grey = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)

    async def scenario() -> list[dict[str, np.ndarray]]:
        batcher = Batcher(lambda f: {"y": f["x"].sum(axis=1)}, BatchingConfig(max_queue_delay_us=100_000), "m",
                          recorder)
        answers = await asyncio.gather(batcher.submit({"x": rgb}), batcher.submit({"x": grey}))
        await batcher.close()
        return answers

    answers = asyncio.run(scenario())
    np.testing.assert_array_equal(answers[0]["y"], rgb.sum(axis=1))
    np.testing.assert_array_equal(answers[1]["y"], grey.sum(axis=1))
    assert sorted(rows for _, rows, _ in recorder.batches) == [1, 1]


def test_preferred_batch_size_bounds_are_1_and_max_batch_size_inclusive() -> None:
    """1 and max_batch_size are valid preferred sizes; 0, -1 and max_batch_size + 1 are refused by name."""
    assert BatchingConfig(max_batch_size=4, preferred_batch_sizes=[1, 4]).preferred_batch_sizes == [1, 4]
    for bad in (0, -1, 5):
        with pytest.raises(ValueError, match=rf"preferred_batch_sizes \[{bad}\] outside 1..max_batch_size \(4\)"):
            BatchingConfig(max_batch_size=4, preferred_batch_sizes=[bad])


@pytest.mark.parametrize("config, rows", [
    (BatchingConfig(enabled=False, max_queue_delay_us=20_000_000), 1),
    (BatchingConfig(max_batch_size=2, max_queue_delay_us=20_000_000), 2),
    (BatchingConfig(max_batch_size=2, max_queue_delay_us=20_000_000), 3),
], ids=["batching-off", "rows-equal-max", "rows-over-max"])
def test_requests_that_run_alone_do_not_wait_for_the_queue_delay(config: BatchingConfig, rows: int) -> None:
    """With batching off, or a request of max_batch_size rows or more, nothing can join it: it runs at once, not
    after the 20 s max_queue_delay_us."""

    async def scenario() -> dict[str, np.ndarray]:
        batcher = Batcher(lambda f: {"y": f["x"] + 1}, config, "m")
        try:
            return await asyncio.wait_for(batcher.submit(_x(1.0, rows=rows)), 10)
        finally:
            await batcher.close()

    assert asyncio.run(scenario())["y"].tolist() == [[2.0]] * rows


def test_the_default_queue_holds_64_requests_then_refuses() -> None:
    """BatchingConfig's default max_queue_size: 64 requests wait while the worker is busy, the 65th is refused."""
    gated = GatedRun()

    async def scenario() -> None:
        batcher = Batcher(gated, BatchingConfig(), "m")
        first = asyncio.create_task(batcher.submit(_x(0.0)))
        await gated.wait_started()
        queued = [asyncio.create_task(batcher.submit(_x(float(i)))) for i in range(1, 65)]
        await asyncio.sleep(0.01)
        assert batcher.queue_depth() == 64 and not any(t.done() for t in queued)
        with pytest.raises(QueueFullError, match=r"queue is full \(64 requests\)"):
            await batcher.submit(_x(99.0))
        gated.release.set()
        answers = await asyncio.gather(first, *queued)
        assert [float(a["y"][0, 0]) for a in answers] == [2.0 * i for i in range(65)]
        await batcher.close()

    asyncio.run(scenario())


def test_close_shuts_down_its_own_executor_but_not_a_shared_one() -> None:
    """The server lends every model version one shared executor: closing a batcher leaves that executor working.
    A batcher that made its own thread pool stops the pool's threads when it closes."""
    shared = ThreadPoolExecutor(1, "shared-pool")

    async def scenario() -> None:
        own = Batcher(lambda f: {"y": f["x"]}, BatchingConfig(max_queue_delay_us=0), "own-pool")
        lent = Batcher(lambda f: {"y": f["x"]}, BatchingConfig(max_queue_delay_us=0), "lent", executor=shared)
        for batcher in (own, lent):
            assert float((await batcher.submit(_x(3.0)))["y"][0, 0]) == 3.0
            await batcher.close()

    try:
        asyncio.run(scenario())
        assert shared.submit(lambda: 42).result(timeout=5) == 42
    finally:
        shared.shutdown()
    assert [t.name for t in threading.enumerate() if t.name.startswith("batcher-own-pool")] == []


def test_close_completes_after_a_worker_was_cancelled_mid_run() -> None:
    """A worker task cancelled during a run (a loop tearing its tasks down) answers its batch with
    BatcherClosedError, and close() still finishes instead of raising the worker's cancellation."""
    gated = GatedRun()

    async def scenario() -> None:
        batcher = Batcher(gated, BatchingConfig(max_batch_size=1, max_queue_delay_us=0), "cancelled")
        running = asyncio.create_task(batcher.submit(_x(1.0)))
        await gated.wait_started()
        [worker] = [t for t in asyncio.all_tasks() if t.get_name() == "batcher-cancelled-0"]
        worker.cancel()
        with pytest.raises(BatcherClosedError, match="stopped during a run"):
            await running
        gated.release.set()
        await batcher.close()
        assert batcher.closed and worker.cancelled()

    asyncio.run(scenario())


def test_a_cancelled_request_leaves_the_rest_of_its_group_queued() -> None:
    """Cancelling one of two queued same-shape requests removes that one only: the other still runs and answers."""
    gated = GatedRun()

    async def scenario() -> None:
        batcher = Batcher(gated, BatchingConfig(max_batch_size=4, max_queue_delay_us=0), "m")
        first = asyncio.create_task(batcher.submit(_x(1.0)))
        await gated.wait_started()
        gone = asyncio.create_task(batcher.submit(_x(5.0)))
        kept = asyncio.create_task(batcher.submit(_x(6.0)))
        await asyncio.sleep(0.01)
        gone.cancel()
        await asyncio.sleep(0.01)
        assert batcher.queue_depth() == 1
        gated.release.set()
        assert float((await first)["y"][0, 0]) == 2.0
        assert float((await asyncio.wait_for(kept, 10))["y"][0, 0]) == 12.0
        await batcher.close()

    asyncio.run(scenario())
    assert [float(call[0, 0]) for call in gated.calls] == [1.0, 6.0]


def test_a_request_whose_deadline_passes_during_a_run_is_dropped_not_run() -> None:
    """A run that holds the event loop up (it runs on the loop's own thread) ends after a queued request's deadline,
    so the worker looks at the queue before that request's own timer fires: the request is still answered
    DeadlineExceededError and never reaches run."""
    ran: list[float] = []

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ran.append(float(feeds["x"][0, 0]))
        time.sleep(0.1)
        return {"y": feeds["x"] * 2}

    async def scenario() -> None:
        config = BatchingConfig(max_batch_size=1, max_queue_delay_us=0)
        batcher = Batcher(run, config, "m", executor=InlineExecutor())
        first = asyncio.create_task(batcher.submit(_x(1.0)))
        late = asyncio.create_task(batcher.submit(_x(7.0), deadline=time.monotonic() + 0.05))
        with pytest.raises(DeadlineExceededError, match="while queued"):
            await late
        assert float((await first)["y"][0, 0]) == 2.0
        assert batcher.queue_depth() == 0
        await batcher.close()

    asyncio.run(scenario())
    assert ran == [1.0]


def test_the_smallest_valid_queue_settings_are_accepted_and_one_below_refused() -> None:
    """max_queue_size 1 and max_queue_delay_us 0 are valid; 0 and -1 are refused by name. With a queue of one, one
    request waits while the worker is busy and the next is refused."""
    with pytest.raises(ValueError, match="max_queue_delay_us must be >= 0, got -1"):
        BatchingConfig(max_queue_delay_us=-1)
    with pytest.raises(ValueError, match="max_queue_size must be >= 1, got 0"):
        BatchingConfig(max_queue_size=0)
    gated = GatedRun()

    async def scenario() -> list[float]:
        batcher = Batcher(gated, BatchingConfig(max_queue_size=1, max_queue_delay_us=0), "m")
        first = asyncio.create_task(batcher.submit(_x(1.0)))
        await gated.wait_started()
        second = asyncio.create_task(batcher.submit(_x(2.0)))
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFullError, match=r"queue is full \(1 requests\)"):
            await batcher.submit(_x(3.0))
        gated.release.set()
        answers = await asyncio.gather(first, second)
        await batcher.close()
        return [float(a["y"][0, 0]) for a in answers]

    assert asyncio.run(scenario()) == [2.0, 4.0]


def test_close_without_arguments_drains_what_was_accepted() -> None:
    """close()'s default finishes the queued requests with their answers; it does not fail them."""
    gated = GatedRun()

    async def scenario() -> list[float]:
        batcher = Batcher(gated, BatchingConfig(max_batch_size=1, max_queue_delay_us=0), "m")
        tasks = [asyncio.create_task(batcher.submit(_x(1.0)))]
        await gated.wait_started()
        tasks += [asyncio.create_task(batcher.submit(_x(float(v)))) for v in (2, 3, 4)]
        await asyncio.sleep(0.01)
        closing = asyncio.create_task(batcher.close())
        await asyncio.sleep(0.01)
        gated.release.set()
        answers = await asyncio.gather(*tasks)
        await closing
        return [float(a["y"][0, 0]) for a in answers]

    assert asyncio.run(scenario()) == [2.0, 4.0, 6.0, 8.0]


def test_a_lone_partial_request_runs_when_its_queue_delay_passes_not_later() -> None:
    """One request that does not fill a batch waits the 50 ms queue delay, then runs: the worker's sleep ends at the
    request's due time (a fixed minimum sleep of a second would answer it 20 times later)."""
    recorder = Recorder()

    async def scenario() -> float:
        batcher = Batcher(lambda f: {"y": f["x"]}, BatchingConfig(max_queue_delay_us=50_000), "m", recorder)
        start = time.monotonic()
        await batcher.submit(_x(1.0))
        took = time.monotonic() - start
        await batcher.close()
        return took

    took = asyncio.run(scenario())
    assert 0.05 <= took < 0.6, took
    assert recorder.batches[0][2][0] >= 0.049
