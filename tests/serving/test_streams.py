"""--streams N: N independent sessions of the chosen candidate, each run of the batcher on a free one."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import tritonclient.grpc as tc

from local_server import server_config
from ganserve.serving.runtime import OrtRunner, RunnerPool
from ganserve.serving.server import ServerThread
from serving_models import AGE_SHIFT, make_repo


def test_streams_build_separate_sessions_and_answer_concurrent_requests(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, broken=False)
    config = server_config(repo)
    config.runtime.streams = 2
    config.batching.disabled = True  # every request its own run, so both sessions are used at once
    with ServerThread(config) as server:
        _, version = server.server.models.get("aging")
        pool = version.runner
        assert isinstance(pool, RunnerPool) and len(pool.runners) == 2
        assert pool.runners[0].session is not pool.runners[1].session
        assert all(isinstance(r, OrtRunner) for r in pool.runners)
        assert version.batcher.config.workers == 2
        rng = np.random.default_rng(5)
        cases = [(rng.uniform(-1, 1, (1, 3, 5, 7)).astype(np.float32), np.eye(3, dtype=np.float32)[[i % 3]])
                 for i in range(12)]
        got: dict[int, np.ndarray] = {}
        errors: list[BaseException] = []

        def call(i: int) -> None:
            client = tc.InferenceServerClient(f"127.0.0.1:{server.port}")
            try:
                inputs = [tc.InferInput("image", [1, 3, 5, 7], "FP32"), tc.InferInput("age", [1, 3], "FP32")]
                inputs[0].set_data_from_numpy(cases[i][0])
                inputs[1].set_data_from_numpy(cases[i][1])
                got[i] = client.infer("aging", inputs).as_numpy("aged")
            except BaseException as exc:  # collected and asserted below
                errors.append(exc)
            finally:
                client.close()

        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(cases))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors and len(got) == len(cases)
        for i, (image, age) in enumerate(cases):  # the test model adds AGE_SHIFT[group] to every pixel
            shift = float(AGE_SHIFT[i % 3])
            want = pool.runners[0].run({"image": image, "age": age})["aged"]
            assert np.array_equal(got[i], want) and np.allclose(got[i], image + shift, atol=1e-6)
        assert version.stats.execution_count == len(cases)  # no batching: one run per request, on either session


def test_a_models_instance_group_sets_its_streams_unless_the_flag_does(tmp_path: Path) -> None:
    """config.pbtxt's instance_group count is the model's runs in flight (as in Triton); --streams overrides it."""
    repo = make_repo(tmp_path, broken=False)
    config_file = repo / "aging" / "config.pbtxt"
    text = config_file.read_text()
    assert "count: 1" in text  # what ganserve's export writes
    config_file.write_text(text.replace("count: 1", "count: 2"))
    with ServerThread(server_config(repo)) as server:  # no --streams
        _, version = server.server.models.get("aging")
        assert isinstance(version.runner, RunnerPool) and len(version.runner.runners) == 2
        assert version.batcher.config.workers == 2
    pinned = server_config(repo)
    pinned.runtime.streams = 1  # --streams 1
    with ServerThread(pinned) as server:
        _, version = server.server.models.get("aging")
        assert isinstance(version.runner, OrtRunner) and version.batcher.config.workers == 1
