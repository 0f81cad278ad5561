"""The semi-supervised digit classifier end to end: tiny training run, ONNX export, served answers = in-process ones."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as tc
from PIL import Image

from ganserve.export.exporter import export_checkpoint, read_card
from ganserve.serving.client import ImagesClient
from ganserve.serving.server import ServerThread
from ganserve.training.checkpoint import build_from_checkpoint
from ganserve.training.trainer import train
from local_server import server_config

TINY = {"d_widths": "64,32", "g_widths": "64", "z_dim": 16, "batch_size": 32, "init_batch": 64,
        "labels_per_class": 5, "seed": 2, "log_every": 10, "eval_every": 0, "sample_every": 0, "ckpt_every": 0}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """(app, repo, server): a tiny ssgan trained for 120 steps, exported as 'digits-ssgan' and served."""
    root = tmp_path_factory.mktemp("ssgan")
    ckpt = train("ssgan", TINY, steps=120, out_dir=root / "run", progress=False)
    export_checkpoint(ckpt, root / "repo", name="digits-ssgan")
    config = server_config(root / "repo")
    server = ServerThread(config)
    server.start()
    yield build_from_checkpoint(ckpt), root / "repo", server
    server.stop()


def _digits(app, count: int) -> np.ndarray:
    """Held-out digits quantised to 8 bits, exactly what a PNG carries."""
    images = app.data_split().held_out.images[:count]
    return (np.rint(images * 255.0) / 255.0).astype(np.float32)


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.rint(image[0] * 255.0).astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def test_card_describes_a_digit_classifier(served) -> None:
    app, repo, _ = served
    card = read_card(repo / "digits-ssgan" / "1")
    assert card.task == "classification" and card.inputs[0].shape == [1, 8, 8]
    out = card.outputs[0]
    assert (out.name, out.role, out.labels) == ("probabilities", "probabilities", [str(i) for i in range(10)])
    assert card.metrics["quality_key"] == "accuracy" and card.metrics["accuracy"] > 0.5
    assert card.metrics["accuracy"] == pytest.approx(app.evaluate()["accuracy"], abs=1e-9)
    assert card.parity["max_abs_error"] < 1e-5


def test_classify_png_equals_in_process_torch_and_ort(served) -> None:
    app, repo, server = served
    x = _digits(app, 6)
    expected = app.predict(x)
    session = ort.InferenceSession(str(repo / "digits-ssgan" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    in_process_ort = session.run(["probabilities"], {"image": x})[0]
    assert np.allclose(in_process_ort, expected, atol=1e-5)
    with ImagesClient(f"127.0.0.1:{server.port}", timeout=30) as client:
        for i in range(len(x)):
            reply = client.classify("digits-ssgan", _png(x[i]), top_k=10)
            probs = np.zeros(10)
            for score in reply.scores:
                probs[int(score.label)] = score.probability
            assert reply.scores[0].label == str(int(expected[i].argmax()))
            assert np.allclose(probs, expected[i], atol=1e-5)


def test_oip_infer_equals_in_process(served) -> None:
    app, _, server = served
    x = _digits(app, 8)
    client = tc.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        tensor = tc.InferInput("image", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        result = client.infer("digits-ssgan", [tensor], outputs=[tc.InferRequestedOutput("probabilities")])
        got = result.as_numpy("probabilities")
    finally:
        client.close()
    expected = app.predict(x)
    assert got.shape == (8, 10) and np.allclose(got, expected, atol=1e-5)
    assert np.array_equal(got.argmax(1), expected.argmax(1))


def test_curve_benchmark_writes_consistent_results(tmp_path: Path) -> None:
    from ganserve.benchmarks.ssgan_curve import main as curve

    out = tmp_path / "curve"
    assert curve(["--per-class", "2", "--seeds", "0,1", "--steps", "10", "--out", str(out),
                  "--set", "d_widths=32", "--set", "g_widths=32", "--set", "batch_size=16"]) == 0
    doc = json.loads((out / "results.json").read_text())
    assert [(r["method"], r["seed"]) for r in doc["runs"]] == [
        ("ssgan", 0), ("baseline", 0), ("svm", 0), ("ssgan", 1), ("baseline", 1), ("svm", 1)]
    for row in doc["summary"]:
        acc = [r["accuracy"] for r in doc["runs"] if r["method"] == row["method"]]
        assert row["labels"] == 20 and row["mean"] == pytest.approx(np.mean(acc))
        assert row["std"] == pytest.approx(np.std(acc, ddof=1))
    for r in doc["runs"]:
        assert np.trace(r["confusion_matrix"]) / np.sum(r["confusion_matrix"]) == pytest.approx(r["accuracy"])
    table = (out / "results.md").read_text()
    assert "| 20 |" in table and (out / "curve.png").stat().st_size > 1000
    merged = tmp_path / "merged"
    assert curve(["--merge", str(out / "results.json"), str(out / "results.json"), "--out", str(merged)]) == 0
    both = json.loads((merged / "results.json").read_text())
    assert len(both["runs"]) == 12
    assert [r["mean"] for r in both["summary"]] == pytest.approx([r["mean"] for r in doc["summary"]])
