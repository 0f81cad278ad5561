"""Provider/precision choice at load: fallbacks with reasons, pins, the quality gate, served = chosen session."""

from __future__ import annotations

import json
import logging
import urllib.request
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tritonclient.grpc as tc
from onnx import TensorProto, helper, numpy_helper
from prometheus_client.parser import text_string_to_metric_families

from ganserve.core.contract import CARD_FILE, CONFIG_FILE, MODEL_FILE, REFERENCE_FILE, ModelCard, TensorSpec, triton_config
from ganserve.core.errors import RepositoryError
from ganserve.serving.candidates import ReferenceCase, check_quality, list_candidates, load_reference_cases
from ganserve.serving.runtime import RuntimeSettings, choose_runner
from ganserve.serving.server import ServerThread
from local_server import server_config

CPU, OV, CUDA = "CPUExecutionProvider", "OpenVINOExecutionProvider", "CUDAExecutionProvider"
CHANNELS, DEPTH = 24, 8
CARD = ModelCard(name="ident", task="super_resolution", architecture="identity through convolutions",
                 inputs=[TensorSpec("x", [3, -1, -1], value_range=[0, 1])],
                 outputs=[TensorSpec("y", [3, -1, -1], value_range=[0, 1])], scale=1)


def _save(model: onnx.ModelProto, path: Path) -> None:
    model.opset_import[0].version = 17
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def _io() -> tuple[onnx.ValueInfoProto, onnx.ValueInfoProto]:
    return (helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"]),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, "H", "W"]))


def slow_identity() -> onnx.ModelProto:
    """y = x through DEPTH 3x3 convolutions of CHANNELS channels whose kernels are exact identities (slow, exact)."""
    def kernel(c_out: int, c_in: int) -> np.ndarray:
        w = np.zeros((c_out, c_in, 3, 3), np.float32)
        for i in range(min(c_out, c_in)):
            w[i, i, 1, 1] = 1.0
        return w
    inits = [numpy_helper.from_array(kernel(CHANNELS, 3), "w_in"), numpy_helper.from_array(kernel(3, CHANNELS), "w_out")]
    nodes = [helper.make_node("Conv", ["x", "w_in"], ["h0"], pads=[1, 1, 1, 1])]
    for i in range(DEPTH):
        inits.append(numpy_helper.from_array(kernel(CHANNELS, CHANNELS), f"w{i}"))
        nodes.append(helper.make_node("Conv", [f"h{i}", f"w{i}"], [f"h{i + 1}"], pads=[1, 1, 1, 1]))
    nodes.append(helper.make_node("Conv", [f"h{DEPTH}", "w_out"], ["y"], pads=[1, 1, 1, 1]))
    x, y = _io()
    return helper.make_model(helper.make_graph(nodes, "slow", [x], [y], inits))


def fast(scale: float) -> onnx.ModelProto:
    """y = scale * x in one op: with scale 1 a faster exact variant, with any other scale a faster wrong one."""
    x, y = _io()
    graph = helper.make_graph([helper.make_node("Mul", ["x", "s"], ["y"])], "fast", [x], [y],
                              [numpy_helper.from_array(np.array(scale, np.float32), "s")])
    return helper.make_model(graph)


def _smooth(shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.random((*shape[:2], shape[2] // 4, shape[3] // 4)).astype(np.float32)
    return np.ascontiguousarray(coarse.repeat(4, 2).repeat(4, 3))


def write_model(repo: Path, name: str, variant: onnx.ModelProto | None, *, perturb: float = 0.0,
                pins: dict[str, str] | None = None) -> Path:
    """A model folder: the slow exact fp32 model.onnx, an optional model.int8.onnx, and a reference set with
    ground truth (the identity's input plus noise) at two sizes; `perturb` moves the stored fp32 outputs that
    fraction of the way towards the truth (a reference that claims more quality than the model has)."""
    folder = repo / name
    _save(slow_identity(), folder / "1" / MODEL_FILE)
    if variant is not None:
        _save(variant, folder / "1" / "model.int8.onnx")
    card = ModelCard.from_dict({**CARD.to_dict(), "name": name})
    (folder / CARD_FILE).write_text(card.to_json())
    config = triton_config(card)
    for key, value in (pins or {}).items():
        config += f'parameters {{ key: "{key}" value {{ string_value: "{value}" }} }}\n'
    (folder / CONFIG_FILE).write_text(config)
    arrays = {}
    for k, shape in enumerate([(2, 3, 16, 16), (1, 3, 24, 20)]):
        x = _smooth(shape, k)
        truth = np.clip(x + np.random.default_rng(10 + k).normal(0, 0.03, x.shape), 0, 1).astype(np.float32)
        pre = "" if k == 0 else f"case{k}/"
        arrays.update({f"{pre}in:x": x, f"{pre}out:y": x + np.float32(perturb) * (truth - x), f"{pre}truth:y": truth})
    np.savez(folder / "1" / REFERENCE_FILE, **arrays)
    return folder


def _choose(folder: Path, **settings) -> object:
    settings.setdefault("intra_op_threads", 1)
    return choose_runner(folder / "1", ModelCard.load(folder / CARD_FILE), folder / "1" / REFERENCE_FILE,
                         RuntimeSettings(**settings))


def _rows(choice) -> dict[str, object]:
    return {f"{t.provider}/{t.precision}": t for t in choice.table}


# -- candidate listing and fallbacks ------------------------------------------------------------------------
def test_unavailable_providers_and_precisions_are_listed_with_their_reason() -> None:
    files = {"fp32": Path("model.onnx"), "int8": Path("model.int8.onnx")}
    tries, skipped = list_candidates(files, [CUDA, OV, CPU], [CPU], bf16_hardware=False)
    assert [(c.provider, c.precision) for c in tries] == [(CPU, "fp32"), (CPU, "int8")]
    reasons = {f"{t.provider}/{t.precision}": t.reason for t in skipped}
    assert reasons[f"{CUDA}/*"] == reasons[f"{OV}/*"] == "provider not in this onnxruntime build"
    assert "only through the OpenVINO provider" in reasons[f"{CPU}/bf16"]
    assert "only on CUDA" in reasons[f"{CPU}/fp16"]


def test_bf16_is_a_candidate_only_on_bf16_hardware_and_gets_the_precision_hint() -> None:
    files = {"fp32": Path("model.onnx")}
    _, skipped = list_candidates(files, [OV, CPU], [OV, CPU], bf16_hardware=False)
    bf16 = next(t for t in skipped if t.provider == OV and t.precision == "bf16")
    assert "no bf16 hardware" in bf16.reason and "amx_bf16" in bf16.reason
    tries, skipped = list_candidates(files, [OV, CPU], [OV, CPU], bf16_hardware=True)
    by = {(c.provider, c.precision): c for c in tries}
    assert set(by) == {(OV, "fp32"), (OV, "bf16"), (CPU, "fp32")}
    assert by[(OV, "bf16")].path == Path("model.onnx")  # bf16 runs the fp32 file with a hint
    unpinned = {"ENABLE_CPU_PINNING": "NO"}
    assert json.loads(by[(OV, "bf16")].options["load_config"]) == {"CPU": {"INFERENCE_PRECISION_HINT": "bf16", **unpinned}}
    assert json.loads(by[(OV, "fp32")].options["load_config"]) == {"CPU": {"INFERENCE_PRECISION_HINT": "f32", **unpinned}}
    assert "no model.int8.onnx" in next(t.reason for t in skipped if t.provider == OV and t.precision == "int8")


def test_load_falls_back_to_what_this_build_has_and_logs_why(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = write_model(tmp_path, "ident", None)
    with caplog.at_level(logging.INFO, logger="ganserve.serving"):
        choice = _choose(folder, bf16_hardware=False)
    available = ort.get_available_providers()
    assert choice.candidate.precision == "fp32" and choice.runner.provider in available
    rows = _rows(choice)
    if CUDA not in available:
        assert rows[f"{CUDA}/*"].reason == "provider not in this onnxruntime build"
        assert f"{CUDA}/*" in caplog.text and "provider not in this onnxruntime build" in caplog.text
    assert "no model.int8.onnx" in rows[f"{CPU}/int8"].reason
    assert rows[f"{CPU}/fp32"].status in ("chosen", "passed") and rows[f"{CPU}/fp32"].p50_ms > 0


# -- the quality gate ------------------------------------------------------------------------------------------
def test_a_faster_exact_variant_is_chosen(tmp_path: Path) -> None:
    choice = _choose(write_model(tmp_path, "ident", fast(1.0)), providers=["cpu"])
    rows = _rows(choice)
    assert (choice.candidate.precision, choice.candidate.path.name) == ("int8", "model.int8.onnx")
    assert rows[f"{CPU}/int8"].status == "chosen" and rows[f"{CPU}/fp32"].status == "passed"
    assert rows[f"{CPU}/int8"].p50_ms < rows[f"{CPU}/fp32"].p50_ms
    assert "drop +0.000" in rows[f"{CPU}/int8"].quality


def test_a_faster_candidate_that_loses_quality_is_never_chosen(tmp_path: Path) -> None:
    choice = _choose(write_model(tmp_path, "ident", fast(0.98)), providers=["cpu"])
    rows = _rows(choice)
    assert (choice.candidate.precision, choice.candidate.path.name) == ("fp32", MODEL_FILE)
    assert rows[f"{CPU}/int8"].status == "failed quality" and rows[f"{CPU}/int8"].p50_ms < rows[f"{CPU}/fp32"].p50_ms
    drop = float(rows[f"{CPU}/int8"].quality.split("drop ")[1].split(",")[0])
    assert drop > 0.1


def test_with_a_perturbed_reference_only_the_model_as_exported_serves(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    folder = write_model(tmp_path, "ident", fast(1.0), perturb=0.5)
    with caplog.at_level(logging.WARNING, logger="ganserve.serving"):
        choice = _choose(folder, providers=["cpu"])
    rows = _rows(choice)
    assert rows[f"{CPU}/int8"].status == "failed quality"  # faster, exact, but not what the reference says
    assert (choice.candidate.precision, choice.candidate.path.name) == ("fp32", MODEL_FILE)
    assert rows[f"{CPU}/fp32"].status == "chosen" and "drop +6.0" in rows[f"{CPU}/fp32"].quality
    assert "no candidate reproduces the reference set" in caplog.text


def test_classifier_rule_is_no_top1_change() -> None:
    card = ModelCard(name="c", task="classification", architecture="t", inputs=[TensorSpec("p", [4], layout="NC")],
                     outputs=[TensorSpec("probs", [3], role="probabilities", layout="NC")])
    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]], np.float32)
    case = ReferenceCase({"p": np.zeros((3, 4), np.float32)}, {"probs": probs})
    shaken = probs + np.float32(0.05) * np.array([[-1, 1, 0], [1, -1, 0], [0, 1, -1]], np.float32)
    ok, text = check_quality(card, [case], [{"probs": shaken}], "int8")
    assert ok and "top-1 changed on 0/3" in text
    flipped = shaken.copy()
    flipped[1] = [0.45, 0.44, 0.11]
    ok, text = check_quality(card, [case], [{"probs": flipped}], "int8")
    assert not ok and "top-1 changed on 1/3" in text


def test_reference_cases_read_every_case_and_the_old_single_case_layout(tmp_path: Path) -> None:
    folder = write_model(tmp_path, "ident", None)
    cases = load_reference_cases(folder / "1" / REFERENCE_FILE)
    assert [c.inputs["x"].shape for c in cases] == [(2, 3, 16, 16), (1, 3, 24, 20)]
    assert all(set(c.truth) == {"y"} for c in cases)
    np.savez(tmp_path / "old.npz", **{"in:x": cases[0].inputs["x"], "out:y": cases[0].expected["y"]})
    old = load_reference_cases(tmp_path / "old.npz")
    assert len(old) == 1 and old[0].truth == {} and old[0].expected["y"].shape == (2, 3, 16, 16)


# -- pins -------------------------------------------------------------------------------------------------------
def test_a_pinned_precision_is_honoured_even_when_slower(tmp_path: Path) -> None:
    choice = _choose(write_model(tmp_path, "ident", fast(1.0)), providers=["cpu"], precision="fp32")
    assert choice.pinned and choice.candidate.precision == "fp32" and choice.parameters()["ganserve.choice"] == "pinned"
    assert [t.precision for t in choice.table if t.status in ("chosen", "passed")] == ["fp32"]


def test_a_pinned_precision_this_machine_cannot_run_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match="no candidate for precision bf16") as err:
        _choose(write_model(tmp_path, "ident", None), bf16_hardware=False, precision="bf16")
    if OV in ort.get_available_providers():
        assert "no bf16 hardware" in str(err.value)
    else:
        assert f"{OV}/bf16: provider not in this onnxruntime build" in str(err.value)
    with pytest.raises(RepositoryError, match="unknown precision"):
        RuntimeSettings(precision="fp8")


# -- served = chosen in-process session -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    repo = tmp_path_factory.mktemp("precision") / "repo"
    write_model(repo, "auto", fast(1.0))
    write_model(repo, "pinned", fast(1.0), pins={"precision": "fp32", "providers": "cpu"})
    write_model(repo, "bf16-pinned", None, pins={"precision": "bf16"})
    config = server_config(repo)
    config.runtime.bf16_hardware = False
    thread = ServerThread(config)
    thread.start()
    yield repo, thread
    thread.stop()


def test_served_output_equals_the_chosen_in_process_session(served) -> None:
    repo, thread = served
    client = tc.InferenceServerClient(f"127.0.0.1:{thread.port}")
    x = _smooth((1, 3, 32, 28), 7) * np.float32(0.9) + np.float32(0.05)
    for name, file in (("auto", "model.int8.onnx"), ("pinned", MODEL_FILE)):
        params = client.get_model_config(name).config.parameters
        assert params["ganserve.model_file"].string_value == file
        table = json.loads(params["ganserve.candidates"].string_value)
        assert [r["file"].rsplit("/", 1)[-1] for r in table if r["status"] == "chosen"] == [file]
        inp = tc.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        got = client.infer(name, [inp]).as_numpy("y")
        session = ort.InferenceSession(str(repo / name / "1" / file), providers=[params["ganserve.provider"].string_value])
        np.testing.assert_array_equal(got, session.run(None, {"x": x})[0])
    assert client.get_model_config("pinned").config.parameters["ganserve.choice"].string_value == "pinned"
    assert client.get_model_config("pinned").config.parameters["precision"].string_value == "fp32"


def test_a_model_pinned_to_an_unavailable_precision_is_unavailable_with_the_reason(served) -> None:
    _, thread = served
    model = thread.server.models.models["bf16-pinned"]
    assert model.state == "UNAVAILABLE" and "no candidate for precision bf16" in model.reason
    assert thread.server.models.models["auto"].state == "READY"


def test_the_choice_is_a_prometheus_metric(served) -> None:
    _, thread = served
    text = urllib.request.urlopen(f"http://127.0.0.1:{thread.metrics_port}/metrics", timeout=10).read().decode()
    chosen = [line for line in text.splitlines() if line.startswith("ganserve_candidate_p50_ms{") and 'chosen="1"' in line]
    assert any('model="auto"' in line and 'precision="int8"' in line for line in chosen)
    assert any('model="pinned"' in line and 'precision="fp32"' in line for line in chosen)
    value = float(next(line for line in chosen if 'model="auto"' in line).rsplit(" ", 1)[1])
    # Every published gauge is the measured p50 of its own row of the choice table, not another row's (the slow
    # exact fp32 rows take ~3 ms here, the chosen one-op variant ~0.006 ms) nor another unit.
    gauges = {(g.labels["model"], g.labels["provider"], g.labels["precision"], g.labels["status"]): g.value
              for family in text_string_to_metric_families(text) if family.name == "ganserve_candidate_p50_ms"
              for g in family.samples if g.labels["model"] in ("auto", "pinned")}
    client = tc.InferenceServerClient(f"127.0.0.1:{thread.port}")
    for name in ("auto", "pinned"):
        table = thread.server.models.get(name, "")[1].choice.table
        assert {k[1:]: v for k, v in gauges.items() if k[0] == name} == {
            (t.provider, t.precision, t.status): t.p50_ms for t in table if t.p50_ms is not None}
        published = json.loads(client.get_model_config(name).config.parameters["ganserve.candidates"].string_value)
        assert [r["p50_ms"] for r in published] == [None if t.p50_ms is None else pytest.approx(t.p50_ms, abs=5e-4)
                                                  for t in table]  # ModelConfig shows the same, to 3 decimals
    row = next(t for t in thread.server.models.get("auto", "")[1].choice.table if t.status == "chosen")
    size = thread.config.runtime.timing_size
    assert value == row.p50_ms == row.p50_ms_by_size[f"{size}x{size}"]  # the chosen row, on the typical input


def test_throughput_mode_runs_several_batches_at_once_with_the_cores_shared(tmp_path: Path) -> None:
    import asyncio
    import os

    from ganserve.serving.metrics import ServerMetrics
    from ganserve.serving.model_manager import BatchingOverrides, ModelManager

    assert RuntimeSettings(streams=2, intra_op_threads=0).threads() == max(1, (os.cpu_count() or 1) // 2)
    assert RuntimeSettings(streams=2, intra_op_threads=3).threads() == 3
    with pytest.raises(RepositoryError, match="streams must be >= 0"):
        RuntimeSettings(streams=-1)
    assert RuntimeSettings(streams=0).threads() == (os.cpu_count() or 1)  # 0: each model's own count, resolved at load
    write_model(tmp_path / "repo", "ident", None)

    async def load() -> tuple[int, int]:
        manager = ModelManager(tmp_path / "repo", RuntimeSettings(streams=2, providers=["cpu"]), BatchingOverrides(),
                               ServerMetrics())
        model = await manager.load("ident")
        version = model.latest()
        await manager.close()
        sessions = {id(r.session): r.session.get_session_options().intra_op_num_threads for r in version.runner.runners}
        return version.batcher.config.workers, sessions
    workers, sessions = asyncio.run(load())
    assert workers == 2 and list(sessions.values()) == [max(1, (os.cpu_count() or 1) // 2)] * 2  # two sessions


@pytest.mark.skipif(OV not in ort.get_available_providers(), reason="onnxruntime-openvino is not the installed flavour")
def test_openvino_candidates_run_with_an_explicit_precision_hint(tmp_path: Path) -> None:
    choice = _choose(write_model(tmp_path, "ident", None), providers=["openvino"], bf16_hardware=False)
    rows = _rows(choice)
    assert choice.runner.provider == OV and choice.candidate.precision == "fp32"
    assert rows[f"{OV}/fp32"].status == "chosen" and "drop +0.000" in rows[f"{OV}/fp32"].quality
    x = _smooth((1, 3, 24, 24), 3)
    np.testing.assert_allclose(choice.runner.run({"x": x})["y"], x, atol=1e-5)


class _Timed:
    """A runner whose run takes a set time per input width: stands in for two providers that scale differently."""

    def __init__(self, ms_by_width: dict[int, float]) -> None:
        self.ms_by_width = ms_by_width

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import time

        x = feeds["x"]
        time.sleep(self.ms_by_width[x.shape[-1]] / 1e3)
        return {"y": x}


def test_the_choice_weighs_every_timing_size() -> None:
    """Faster at 64x64 but 4x slower at 256x256 loses to a candidate that is 2x slower small and fastest large."""
    from ganserve.serving.candidates import Candidate, choose

    speeds = {"small-fast": {64: 2.0, 256: 80.0}, "large-fast": {64: 4.0, 256: 20.0}}
    candidates = [Candidate("CPUExecutionProvider", p, Path(f"{p}.onnx")) for p in ("fp32", "int8")]
    names = dict(zip(("fp32", "int8"), speeds))
    choice = choose(None, candidates, [], [], lambda c: _Timed(speeds[names[c.precision]]),
                    lambda r: {f"{n}x{n}": {"x": np.zeros((1, 3, n, n), np.float32)} for n in (64, 256)})
    assert choice.candidate.precision == "int8"
    rows = {t.precision: t for t in choice.table}
    assert set(rows["fp32"].p50_ms_by_size) == {"64x64", "256x256"}
    assert rows["fp32"].p50_ms_by_size["64x64"] < rows["int8"].p50_ms_by_size["64x64"]  # fp32 did win small inputs
    assert rows["fp32"].p50_ms == rows["fp32"].p50_ms_by_size["64x64"]


def test_timing_sizes_follow_how_the_model_is_served() -> None:
    from ganserve.serving.runtime import timing_sizes

    def card(tile_safe: bool, tile: int = 0, shape=(3, -1, -1)) -> ModelCard:
        return ModelCard(name="m", task="translation", architecture="a", tile_safe=tile_safe, tile_size=tile,
                         inputs=[TensorSpec("x", list(shape))], outputs=[TensorSpec("y", [3, -1, -1])])
    settings = RuntimeSettings()
    assert timing_sizes(card(True), settings) == [64]  # tiles of the timing size
    assert timing_sizes(card(True, tile=96), settings) == [96]  # the card's own tile
    assert timing_sizes(card(False), settings) == [64, 256]  # whole pictures: small and large
    assert timing_sizes(card(False, shape=(3, 64, 64)), settings) == [64]  # a fixed size needs one
