"""Raindrop removal end to end: tiny training, ONNX export (dynamic H/W through the ConvLSTM), served output equal
to in-process ONNX output (image API, OIP, `ganserve client derain`), and the held-out quality report."""

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
from ganserve.pipeline.cli import main as ganserve_main
from ganserve.serving.client import ImagesClient
from ganserve.serving.server import ServerThread
from ganserve.training.checkpoint import build_from_checkpoint
from ganserve.training.trainer import train
from rgb8 import png, nchw, to8
from local_server import chosen_runner, server_config

TINY = {"arn_channels": 4, "arn_blocks": 1, "ae_width": 4, "d_channels": 4, "patch": 32, "batch_size": 2,
        "log_every": 1, "ckpt_every": 0}
NAME = "derain"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """(app, checkpoint, repo, server): a tiny attentive GAN trained 3 steps, exported as 'derain' and served."""
    root = tmp_path_factory.mktemp("derain")
    ckpt = train("attentive-gan", TINY, steps=3, out_dir=root / "run", progress=False)
    export_checkpoint(ckpt, root / "repo", name=NAME)
    config = server_config(root / "repo")
    server = ServerThread(config)
    server.start()
    yield build_from_checkpoint(ckpt), ckpt, root / "repo", server
    server.stop()


def _session(repo: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(repo / NAME / "1" / "model.onnx"), providers=["CPUExecutionProvider"])


def test_card_declares_image_and_mask_outputs_and_whole_image_serving(served) -> None:
    app, _, repo, _ = served
    card = read_card(repo / NAME / "1")
    assert card.task == "derain" and card.spatial_multiple == 4 and card.scale == 1
    assert card.tile_safe is False and card.training["receptive_radius_px"] > 100
    assert [(t.name, t.role, t.shape) for t in card.outputs] == [("derained", "image", [3, -1, -1]),
                                                                 ("attention", "mask", [1, -1, -1])]
    assert card.parity["max_abs_error"] < 1e-4
    labels = [case["inputs"] for case in card.parity["checked"]]
    sizes = {label.split(", ", 2)[2] for label in labels if "[" in label}
    assert sizes == {"64, 64]", "72, 80]", "48, 80]"}  # traced size, a grown random one, a held-out crop
    assert card.metrics["quality_key"] == "psnr"
    assert card.metrics["psnr"] == pytest.approx(app.evaluate()["psnr"], abs=1e-3)


@pytest.mark.parametrize("size", [(36, 52), (100, 60)])
def test_onnx_matches_torch_at_sizes_not_traced(served, size: tuple[int, int]) -> None:
    app, _, repo, _ = served
    rng = np.random.default_rng(size[0])
    x = rng.uniform(0.0, 1.0, size=(2, 3, *size)).astype(np.float32)
    derained, attention = _session(repo).run(["derained", "attention"], {"rainy": x})
    expected, expected_map = app.predict(x)
    assert derained.shape == x.shape and attention.shape == (2, 1, *size)
    assert np.abs(derained - expected).max() < 1e-4 and np.abs(attention - expected_map).max() < 1e-4


def test_served_derain_equals_in_process_onnx(served) -> None:
    app, _, repo, server = served
    runner = chosen_runner(server, NAME)  # the server's provider and precision, whichever flavour is installed
    images = [app.demo_examples(1)[0].image, app.demo_examples(1)[0].image[:50, :70]]  # 50x70: padded to 52x72
    with ImagesClient(f"127.0.0.1:{server.port}", timeout=60) as client:
        for image in images:
            reply = client.derain(NAME, png(image))
            got = np.asarray(Image.open(io.BytesIO(reply.image)).convert("RGB"))
            h, w = image.shape[:2]
            x = nchw(image)
            padded = np.pad(x, ((0, 0), (0, 0), (0, -h % 4), (0, -w % 4)), mode="reflect")
            expected = to8(runner.run({"rainy": padded})["derained"][:, :, :h, :w])
            assert got.shape == (h, w, 3) and (reply.width, reply.height) == (w, h)
            assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def test_oip_returns_both_outputs_equal_to_in_process(served) -> None:
    _, _, repo, server = served
    x = nchw(np.asarray(Image.open(io.BytesIO(png(np.full((40, 44, 3), 90, np.uint8))))))
    client = tc.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        tensor = tc.InferInput("rainy", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        result = client.infer(NAME, [tensor], outputs=[tc.InferRequestedOutput("derained"),
                                                       tc.InferRequestedOutput("attention")])
        got = result.as_numpy("derained"), result.as_numpy("attention")
    finally:
        client.close()
    outputs = chosen_runner(server, NAME).run({"rainy": x})
    expected = outputs["derained"], outputs["attention"]
    assert all(np.abs(g - e).max() < 1e-5 for g, e in zip(got, expected))


def test_client_derain_command(served, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    app, _, _, server = served
    image = app.demo_examples(2)[1].image
    src, dst = tmp_path / "rainy.png", tmp_path / "out.png"
    src.write_bytes(png(image))
    rc = ganserve_main(["client", "--server", f"127.0.0.1:{server.port}", "derain", str(src), str(dst), "--model", NAME])
    assert rc == 0 and "128x128" in capsys.readouterr().out
    with ImagesClient(f"127.0.0.1:{server.port}", timeout=60) as client:
        direct = np.asarray(Image.open(io.BytesIO(client.derain(NAME, png(image)).image)))
    assert np.array_equal(np.asarray(Image.open(dst)), direct)
    assert ganserve_main(["client", "--server", f"127.0.0.1:{server.port}", "derain", str(tmp_path / "missing.png"),
                          str(dst), "--model", NAME]) == 2


def test_quality_report_tables_the_three_rows(served, tmp_path: Path) -> None:
    from ganserve.benchmarks.derain_quality import main as report

    app, ckpt, _, _ = served
    baseline = train("attentive-gan", {**TINY, "baseline_l1": True}, steps=2, out_dir=tmp_path / "l1", progress=False)
    out = tmp_path / "report"
    assert report([str(ckpt), str(baseline), "--out", str(out)]) == 0
    doc = json.loads((out / "results.json").read_text())
    rows = {r["method"]: r for r in doc["rows"]}
    assert set(rows) == {"rainy input", "attentive GAN", "autoencoder, L1 only"}
    assert rows["attentive GAN"]["psnr"] == pytest.approx(app.evaluate()["psnr"], abs=1e-6)
    assert rows["rainy input"]["psnr"] == pytest.approx(app.evaluate()["rainy_psnr"], abs=1e-6)
    assert rows["attentive GAN"]["steps"] == 3 and rows["autoencoder, L1 only"]["steps"] == 2
    table = (out / "results.md").read_text()
    assert "| attentive GAN |" in table and "| rainy input |" in table
    picture = Image.open(out / "side_by_side.png")
    assert picture.width == 2 * 5 * 128 and picture.height > 2 * 3 * 128
