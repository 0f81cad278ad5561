"""Translation end to end: tiny pix2pix and CycleGAN (both directions) trained, exported, served; served output equal
to in-process ONNX output (image API with padding to the spatial multiple, OIP, `ganserve client translate`)."""

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

P2P = {"depth": 5, "ngf": 4, "max_mult": 2, "ndf": 4, "d_max_mult": 2, "crop": 32, "batch_size": 2,
       "log_every": 1, "eval_every": 0, "sample_every": 0, "ckpt_every": 0}
CYC = {"ngf": 4, "blocks": 1, "ndf": 4, "d_max_mult": 2, "crop": 32, "batch_size": 2, "pool_size": 3,
       "log_every": 1, "eval_every": 0, "sample_every": 0, "ckpt_every": 0}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """(apps by model name, repo, server, checkpoints): pix2pix, cyclegan-ab and cyclegan-ba, trained 2 steps each
    and served."""
    root = tmp_path_factory.mktemp("translation")
    p2p = train("pix2pix", P2P, steps=2, out_dir=root / "p2p", progress=False)
    cyc = train("cyclegan", CYC, steps=2, out_dir=root / "cyc", progress=False)
    export_checkpoint(p2p, root / "repo", name="pix2pix")
    export_checkpoint(cyc, root / "repo", name="cyclegan-ab")  # the config's export_direction: ab
    rc = ganserve_main(["export", str(cyc), "--repo", str(root / "repo"), "--name", "cyclegan-ba",
                        "--option", "export_direction=ba", "--quiet"])
    assert rc == 0
    config = server_config(root / "repo")
    config.images.tile_size = 64  # small tiles, which none of these whole-image models may get
    server = ServerThread(config)
    server.start()
    apps = {"pix2pix": build_from_checkpoint(p2p), "cyclegan-ab": build_from_checkpoint(cyc),
            "cyclegan-ba": build_from_checkpoint(cyc, {"export_direction": "ba"})}
    yield apps, root / "repo", server, {"pix2pix": p2p, "cyclegan": cyc}
    server.stop()


def _session(repo: Path, name: str) -> ort.InferenceSession:
    return ort.InferenceSession(str(repo / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"])


def test_cards_describe_each_model(served) -> None:
    apps, repo, _, _ = served
    p2p = read_card(repo / "pix2pix" / "1")
    assert (p2p.task, p2p.spatial_multiple, p2p.tile_safe, p2p.scale) == ("translation", 32, False, 1)
    assert p2p.metrics["quality_key"] == "psnr" and p2p.parity["max_abs_error"] < 1e-4
    assert p2p.metrics["psnr"] == pytest.approx(apps["pix2pix"].evaluate()["psnr"], abs=1e-3)
    full = apps["cyclegan-ab"].evaluate()
    for direction in ("ab", "ba"):
        card = read_card(repo / f"cyclegan-{direction}" / "1")
        assert (card.task, card.spatial_multiple, card.tile_safe) == ("translation", 4, False)
        assert card.metrics["quality_key"] == f"psnr_{direction}" and card.training["direction"] == direction
        assert card.metrics[f"psnr_{direction}"] == pytest.approx(full[f"psnr_{direction}"], abs=1e-3)
        assert card.parity["max_abs_error"] < 1e-4
    ab = _session(repo, "cyclegan-ab").run(None, {"image": np.full((1, 3, 8, 8), 0.5, np.float32)})[0]
    ba = _session(repo, "cyclegan-ba").run(None, {"image": np.full((1, 3, 8, 8), 0.5, np.float32)})[0]
    assert np.abs(ab - ba).max() > 1e-4  # two different generators


def test_export_option_must_be_a_config_key(served, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cyc = served[3]["cyclegan"]
    rc = ganserve_main(["export", str(cyc), "--repo", str(tmp_path), "--option", "export_way=ba", "--quiet"])
    assert rc == 2 and "unknown config key(s) export_way" in capsys.readouterr().err
    rc = ganserve_main(["export", str(cyc), "--repo", str(tmp_path), "--option", "export_direction=up", "--quiet"])
    assert rc == 2 and "export_direction must be ab or ba" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_onnx_dropout_is_off_and_matches_torch_at_a_new_size(served) -> None:
    apps, repo, _, _ = served
    x = np.random.default_rng(0).uniform(0, 1, (2, 3, 64, 96)).astype(np.float32)
    session = _session(repo, "pix2pix")
    first, second = session.run(None, {"image": x})[0], session.run(None, {"image": x})[0]
    expected = apps["pix2pix"]._predict(x)
    assert np.array_equal(first, second) and np.abs(first - expected).max() < 1e-4


@pytest.mark.parametrize("name", ["pix2pix", "cyclegan-ab", "cyclegan-ba"])
def test_served_translate_equals_in_process_onnx(served, name: str) -> None:
    apps, repo, server, _ = served
    card = read_card(repo / name / "1")
    runner = chosen_runner(server, name)  # the server's provider and precision, whichever flavour is installed
    example = apps[name].demo_examples(1)[0].image
    with ImagesClient(f"127.0.0.1:{server.port}", timeout=60) as client:
        for image in (example[:70, :90], example[:64, :128]):  # 70x90 is padded to the spatial multiple
            reply = client.translate(name, png(image))
            got = np.asarray(Image.open(io.BytesIO(reply.image)).convert("RGB"))
            h, w = image.shape[:2]
            m = card.spatial_multiple
            padded = np.pad(nchw(image), ((0, 0), (0, 0), (0, -h % m), (0, -w % m)), mode="reflect")
            expected = to8(runner.run({"image": padded})["translated"][:, :, :h, :w])
            assert got.shape == (h, w, 3) and reply.tiles == 1  # whole-image models are never tiled
            assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def test_oip_infer_equals_in_process(served) -> None:
    _, repo, server, _ = served
    x = np.random.default_rng(1).uniform(0, 1, (2, 3, 32, 36)).astype(np.float32)
    client = tc.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        tensor = tc.InferInput("image", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        got = client.infer("cyclegan-ba", [tensor], outputs=[tc.InferRequestedOutput("translated")]).as_numpy("translated")
    finally:
        client.close()
    expected = chosen_runner(server, "cyclegan-ba").run({"image": x})["translated"]
    assert got.shape == x.shape and np.abs(got - expected).max() < 1e-5


def test_client_translate_command(served, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    apps, _, server, _ = served
    image = apps["cyclegan-ab"].demo_examples(1)[0].image[:100, :120]
    src, dst = tmp_path / "in.png", tmp_path / "out.png"
    src.write_bytes(png(image))
    address = f"127.0.0.1:{server.port}"
    assert ganserve_main(["client", "--server", address, "translate", str(src), str(dst), "--model", "cyclegan-ab"]) == 0
    assert "120x100" in capsys.readouterr().out
    with ImagesClient(address, timeout=60) as client:
        direct = np.asarray(Image.open(io.BytesIO(client.translate("cyclegan-ab", png(image)).image)))
    assert np.array_equal(np.asarray(Image.open(dst)), direct)
    assert ganserve_main(["client", "--server", address, "translate", str(src), str(dst), "--model", "nope"]) == 2


def test_quality_report_tables_models_against_baselines(served, tmp_path: Path) -> None:
    from ganserve.benchmarks.translation_quality import main as report

    apps, _, _, ckpts = served
    p2p, cyc = ckpts["pix2pix"], ckpts["cyclegan"]
    l1 = train("pix2pix", {**P2P, "gan_weight": 0.0}, steps=1, out_dir=tmp_path / "l1", progress=False)
    out = tmp_path / "report"
    assert report(["--pix2pix", str(p2p), "--l1", str(l1), "--cyclegan", str(cyc), "--out", str(out)]) == 0
    doc = json.loads((out / "results.json").read_text())
    rows = {r["method"]: r for r in doc["pix2pix"]}
    assert set(rows) == {"identity (edge map)", "L1-only U-Net", "pix2pix"}
    assert rows["pix2pix"]["psnr"] == pytest.approx(apps["pix2pix"].evaluate()["psnr"], abs=1e-6)
    assert rows["L1-only U-Net"]["steps"] == 1 and rows["pix2pix"]["steps"] == 2
    cyc_rows = {(r["method"], r["direction"]): r for r in doc["cyclegan"]}
    assert cyc_rows[("identity", "ab")]["psnr"] == pytest.approx(cyc_rows[("identity", "ba")]["psnr"])
    run = "CycleGAN, transposed-convolution upsampling"  # the fixture's generators use the default upsampling
    assert (run, "ab") in cyc_rows and (run, "ba") in cyc_rows
    assert cyc_rows[(run, "ab")]["psnr"] == pytest.approx(apps["cyclegan-ab"].evaluate()["psnr_ab"], abs=1e-6)
    assert doc["cycle"][str(cyc)]["cycle_l1_a"] == pytest.approx(apps["cyclegan-ab"].evaluate()["cycle_l1_a"], abs=1e-6)
    table = (out / "results.md").read_text()
    assert "| pix2pix |" in table and f"| {run} | A -> B |" in table
    assert (out / "pix2pix.png").stat().st_size > 1000 and (out / "cyclegan.png").stat().st_size > 1000
