"""The warm-start cache of the provider/precision choice: cold loads measure and store, warm loads build only the
stored choice (re-checked on the reference set), and any change of files, settings or a broken entry re-measures."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import signal
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tritonclient.grpc as tc
from onnx import helper, numpy_helper

from ganserve.pipeline.cli import main
from ganserve.core.contract import MODEL_FILE, REFERENCE_FILE
from ganserve.serving.choice_cache import CACHE_ENV, CHOICES_DIR, OPENVINO_DIR
from ganserve.serving.metrics import ServerMetrics
from ganserve.serving.model_manager import READY, BatchingOverrides, ModelManager
from ganserve.serving.candidates import Choice
from ganserve.serving.runtime import RuntimeSettings
from ganserve.serving.server import ServerThread, start_subprocess
from local_server import server_config
from serving_models import sr_model, write_model

INT8 = "model.int8.onnx"
OV = "OpenVINOExecutionProvider"


def _variant(gain: float) -> onnx.ModelProto:
    """The x2 upscaler times `gain`: 1.0 is an exact second candidate, 0.5 one that fails the reference check."""
    model = sr_model()
    graph = model.graph
    graph.node[0].output[0] = "up"
    graph.node.append(helper.make_node("Mul", ["up", "gain"], ["hr"]))
    graph.initializer.append(numpy_helper.from_array(np.array(gain, np.float32), "gain"))
    model.opset_import[0].version = 17
    model.ir_version = 8
    return model


def _repo(root: Path, gain: float = 1.0) -> Path:
    """A repository with sr2 (model.onnx + reference set) and an int8 variant, so CPU alone has two candidates."""
    repo = root / "repo"
    write_model(repo, "sr2")
    onnx.save(_variant(gain), str(repo / "sr2" / "1" / INT8))
    return repo


def _load(repo: Path, cache: Path | None, **settings: object) -> Choice:
    """Load sr2 in a fresh ModelManager (as a restarted server would) and return its choice."""
    settings = {"providers": ["cpu"], "intra_op_threads": 1, "cache_dir": cache, **settings}

    async def run():
        manager = ModelManager(repo, RuntimeSettings(**settings), BatchingOverrides(), ServerMetrics())
        model = await manager.load("sr2")
        await manager.close()
        return model
    model = asyncio.run(run())
    assert model.state == READY, model.reason
    return model.latest().choice


def _entries(cache: Path) -> list[Path]:
    return sorted((cache / CHOICES_DIR).glob("*.json")) if (cache / CHOICES_DIR).is_dir() else []


def _speeds(choice: Choice) -> list[tuple[str, str, str, float | None]]:
    return [(t.provider, t.precision, t.status, None if t.p50_ms is None else round(t.p50_ms, 3))
            for t in choice.table]  # the table's JSON keeps times to the microsecond


def test_cold_load_stores_the_choice_and_a_warm_load_builds_only_that_candidate(tmp_path: Path) -> None:
    repo, cache = _repo(tmp_path), tmp_path / "cache"
    cold = _load(repo, cache)
    assert cold.source == "measured" and cold.built == ["CPU/fp32", "CPU/int8"]
    [entry_file] = _entries(cache)
    entry = json.loads(entry_file.read_text())
    assert entry_file.stem == entry["key"] and len(entry["key"]) == 64
    assert entry["chosen"] == {"provider": "CPUExecutionProvider", "precision": cold.candidate.precision,
                               "file": cold.candidate.path.name, "passed": True}
    assert {r["file"] for r in entry["table"] if r["file"]} == {MODEL_FILE, INT8}  # names: the repo may move
    material = entry["key_material"]
    assert set(material["files"]) == {MODEL_FILE, INT8} and len(material["reference"]) == 64
    assert material["settings"]["threads"] == 1 and material["machine"]["onnxruntime"] == ort.__version__

    warm = _load(repo, cache)
    assert warm.source == "cache" and warm.built == [cold.candidate.label]
    assert (warm.candidate.precision, warm.candidate.path) == (cold.candidate.precision, cold.candidate.path)
    assert _speeds(warm) == _speeds(cold)  # the stored table, timings included, is what the warm load serves
    assert {t.source for t in warm.table} == {"cache"}
    chosen = next(t for t in warm.table if t.status == "chosen")
    assert "max abs error 0.00e+00" in chosen.quality  # the reference check ran again on this load
    params = warm.parameters()
    assert (params["ganserve.choice"], params["ganserve.choice_source"]) == ("auto", "cache")
    assert cold.parameters()["ganserve.choice_source"] == "measured"
    assert {r["source"] for r in json.loads(params["ganserve.candidates"])} == {"cache"}
    x = np.linspace(-1, 1, 3 * 4 * 4, dtype=np.float32).reshape(1, 3, 4, 4)
    np.testing.assert_array_equal(warm.runner.run({"lr": x})["hr"], x.repeat(2, 2).repeat(2, 3))
    assert _entries(cache) == [entry_file]


def _touch_model(repo: Path, settings: dict) -> None:
    model = onnx.load(str(repo / "sr2" / "1" / INT8))
    model.doc_string = "re-exported"
    onnx.save(model, str(repo / "sr2" / "1" / INT8))


def _touch_reference(repo: Path, settings: dict) -> None:
    path = repo / "sr2" / "1" / REFERENCE_FILE
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["in:lr"] = arrays["in:lr"][:1]
    arrays["out:hr"] = arrays["out:hr"][:1]
    np.savez(path, **arrays)


@pytest.mark.parametrize("change", [
    _touch_model, _touch_reference,
    lambda repo, settings: settings.update(intra_op_threads=2),
    lambda repo, settings: settings.update(precision="int8"),
    lambda repo, settings: settings.update(timing_size=32),
], ids=["model file", "reference set", "threads", "pinned precision", "timing size"])
def test_a_change_of_file_or_setting_is_a_miss(tmp_path: Path, change) -> None:
    repo, cache = _repo(tmp_path), tmp_path / "cache"
    settings: dict[str, object] = {}
    first = _load(repo, cache)
    change(repo, settings)
    second = _load(repo, cache, **settings)
    assert (first.source, second.source) == ("measured", "measured")
    assert second.built == [f"CPU/{p}" for p in ([settings["precision"]] if "precision" in settings
                                                  else ["fp32", "int8"])]
    assert len(_entries(cache)) == 2
    assert _load(repo, cache, **settings).source == "cache"  # the new key is stored and hits from now on


@pytest.mark.parametrize("garbage", [b"{not json", b"\xff\xfe\x00", b'{"format": 1, "key": "other"}', b"[]"])
def test_a_corrupt_entry_is_a_miss_with_a_log_line_and_is_rewritten(tmp_path: Path, garbage: bytes,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    repo, cache = _repo(tmp_path), tmp_path / "cache"
    _load(repo, cache)
    [entry_file] = _entries(cache)
    key = json.loads(entry_file.read_text())["key"]
    entry_file.write_bytes(garbage)
    with caplog.at_level(logging.WARNING, logger="ganserve.serving"):
        again = _load(repo, cache)
    assert again.source == "measured" and again.built == ["CPU/fp32", "CPU/int8"]
    assert "choice cache:" in caplog.text and str(entry_file) in caplog.text
    assert json.loads(entry_file.read_text())["key"] == key
    assert not list((cache / CHOICES_DIR).glob("*.tmp"))
    assert _load(repo, cache).source == "cache"


def test_a_stored_choice_that_fails_the_reference_check_now_is_measured_again(tmp_path: Path,
                                                                              caplog: pytest.LogCaptureFixture) -> None:
    repo, cache = _repo(tmp_path, gain=0.5), tmp_path / "cache"
    cold = _load(repo, cache)
    assert cold.candidate.path.name == MODEL_FILE  # the int8 variant halves the output: it fails the check
    [entry_file] = _entries(cache)
    entry = json.loads(entry_file.read_text())
    entry["chosen"].update(precision="int8", file=INT8)  # an entry that names the failing candidate
    for row in entry["table"]:
        row["status"] = {"chosen": "passed", "failed quality": "chosen"}.get(row["status"], row["status"])
    entry_file.write_text(json.dumps(entry))
    with caplog.at_level(logging.WARNING, logger="ganserve.serving"):
        again = _load(repo, cache)
    assert "CPU/int8 fails the reference check now" in caplog.text
    assert again.source == "measured" and again.candidate.path.name == MODEL_FILE
    assert json.loads(entry_file.read_text())["chosen"]["file"] == MODEL_FILE  # overwritten by the measurement


@pytest.mark.skipif(OV not in ort.get_available_providers(), reason="onnxruntime-openvino is not the installed flavour")
def test_openvino_candidates_compile_into_the_cache_folder(tmp_path: Path) -> None:
    repo, cache = _repo(tmp_path), tmp_path / "cache"
    cold = _load(repo, cache, providers=["openvino"], bf16_hardware=False)
    assert cold.candidate.provider == OV
    assert cold.candidate.options["cache_dir"] == str(cache / OPENVINO_DIR)
    blobs = sorted((cache / OPENVINO_DIR).glob("*.blob"))
    assert len(blobs) == 2  # one per OpenVINO candidate: fp32 of model.onnx, int8 of model.int8.onnx
    warm = _load(repo, cache, providers=["openvino"], bf16_hardware=False)
    assert warm.source == "cache" and warm.runner.provider == OV and warm.built == [cold.candidate.label]
    assert sorted((cache / OPENVINO_DIR).glob("*.blob")) == blobs  # same compiled-model keys, no new blobs


def test_a_server_reports_where_its_choice_came_from(tmp_path: Path) -> None:
    repo, cache = _repo(tmp_path), tmp_path / "cache"
    sources = []
    for _ in range(2):
        config = server_config(repo)
        config.runtime.providers, config.runtime.cache_dir = ["cpu"], cache
        with ServerThread(config) as thread:
            params = tc.InferenceServerClient(f"127.0.0.1:{thread.port}").get_model_config("sr2").config.parameters
            sources.append((params["ganserve.choice_source"].string_value, params["ganserve.choice"].string_value))
    assert sources == [("measured", "auto"), ("cache", "auto")]


# -- the command line -------------------------------------------------------------------------------------------
def test_serve_help_lists_the_cache_flags(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert exc.value.code == 0
    assert "--cache-dir CACHE_DIR" in out and "--no-cache" in out and f"${CACHE_ENV}" in out
    assert main(["serve", "--repo", ".", "--cache-dir", "x", "--no-cache"]) == 2
    assert "--cache-dir and --no-cache contradict" in capsys.readouterr().err


def _serve_once(repo: Path, home: Path, env_cache: Path, args: list[str]) -> None:
    proc, port, _, _ = start_subprocess(repo, ["--providers", "cpu", "--intra-op-threads", "1", *args],
                                     env={"HOME": str(home), CACHE_ENV: str(env_cache)})
    assert tc.InferenceServerClient(f"127.0.0.1:{port}").is_model_ready("sr2")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0


def test_serve_caches_in_the_env_folder_by_default_and_no_cache_writes_nothing(tmp_path: Path) -> None:
    repo, home, env_cache = _repo(tmp_path), tmp_path / "home", tmp_path / "env-cache"
    home.mkdir()
    _serve_once(repo, home, env_cache, ["--no-cache"])
    # (plain onnxruntime itself writes ~/.cache/Microsoft; only ganserve's own folder matters here)
    assert not env_cache.exists() and not (home / ".cache" / "ganserve").exists()
    _serve_once(repo, home, env_cache, [])
    assert len(_entries(env_cache)) == 1 and not (home / ".cache" / "ganserve").exists()
    shutil.rmtree(env_cache)
    _serve_once(repo, home, env_cache, ["--cache-dir", str(tmp_path / "flag-cache")])
    assert len(_entries(tmp_path / "flag-cache")) == 1 and not env_cache.exists()


def test_the_memory_cost_measured_at_a_cold_load_is_kept_for_the_warm_one(tmp_path: Path) -> None:
    repo, cache = _repo(tmp_path), tmp_path / "cache"

    def cost():
        async def run():
            manager = ModelManager(repo, RuntimeSettings(providers=["cpu"], intra_op_threads=1, cache_dir=cache),
                                   BatchingOverrides(), ServerMetrics())
            model = await manager.load("sr2")
            await manager.close()
            return model.latest().cost
        return asyncio.run(run())
    cold = cost()
    assert cold.source.startswith("measured"), cold
    [entry] = _entries(cache)
    stored = json.loads(entry.read_text())
    [(key, figure)] = stored["memory"].items()
    assert key.endswith("/" + stored["chosen"]["precision"]) and figure["base_bytes"] == cold.base_bytes
    warm = cost()  # no session of its own, no probe runs: the stored figure
    assert warm.source == f"choice cache: {cold.source}"
    assert (warm.base_bytes, warm.bytes_per_pixel) == (cold.base_bytes, round(cold.bytes_per_pixel, 3))
