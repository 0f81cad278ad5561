"""The trainer end to end on tiny models: resume equals an uninterrupted run, CLI outputs, errors, Ctrl-C, export spec."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganserve.pipeline.cli import main
from ganserve.training.checkpoint import build_from_checkpoint, load_checkpoint
from ganserve.training.calibration import CALIBRATION_BATCHES
from ganserve.training.trainer import train

ROOT = Path(__file__).resolve().parents[2]


def _states_equal(a: Path, b: Path) -> None:
    sa, sb = load_checkpoint(a), load_checkpoint(b)
    assert sa["step"] == sb["step"]
    assert sa["state"].keys() == sb["state"].keys()
    for k in sa["state"]:
        assert torch.equal(sa["state"][k], sb["state"][k]), k


@pytest.mark.parametrize("model", ["srresnet", "srgan"])
def test_resume_gives_the_same_weights_as_one_run(tmp_path, tiny_gan, model) -> None:
    cfg = {**tiny_gan, "batch_norm": True}
    if model == "srresnet":
        cfg.pop("d_channels")
    whole = train(model, cfg, steps=4, out_dir=tmp_path / "whole", progress=False)
    train(model, cfg, steps=2, out_dir=tmp_path / "split", progress=False)
    split = train(model, {}, steps=4, out_dir=tmp_path / "split", resume=True, progress=False)
    _states_equal(whole, split)
    payload = load_checkpoint(split)
    assert set(payload["optim"]) == ({"g"} if model == "srresnet" else {"g", "d"})
    assert payload["optim"]["g"]["state"][0]["step"] == 4  # Adam's own step count survived the resume
    steps_logged = [r["step"] for r in map(json.loads, (tmp_path / "split" / "metrics.jsonl").read_text().splitlines())
                    if r["kind"] == "train"]
    assert steps_logged == [1, 2, 3, 4]


def test_training_lowers_the_loss_and_records_facts(tmp_path, tiny) -> None:
    cfg = {**tiny, "lr": 2e-3, "batch_norm": False, "pixel_loss": "l1", "batch_size": 8}
    path = train("srresnet", cfg, steps=40, out_dir=tmp_path, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss_pix"] for r in rows if r["kind"] == "train"]
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:5])
    metrics = load_checkpoint(path)["metrics"]
    assert metrics["data"]["source"] == "builtin" and "flower" in metrics["held_out"]
    assert metrics["eval"]["bicubic_psnr_y"] > 20 and "psnr_y" in metrics["eval"]


def test_srgan_without_vgg_states_the_fallback(tmp_path, tiny, tiny_gan) -> None:
    pre = train("srresnet", tiny, steps=2, out_dir=tmp_path / "pre", progress=False)
    ck = train("srgan", {**tiny_gan, "init_from": str(pre)}, steps=2, out_dir=tmp_path / "gan", progress=False)
    metrics = load_checkpoint(ck)["metrics"]
    assert metrics["content_loss"].startswith("image_gradients: no VGG19 weights")
    notes = [json.loads(x)["message"] for x in (tmp_path / "gan" / "metrics.jsonl").read_text().splitlines()
             if json.loads(x)["kind"] == "note"]
    assert any("generator initialised from" in n for n in notes)
    assert any("not a perceptual loss" in n for n in notes)
    assert json.loads((tmp_path / "gan" / "eval.json").read_text())["content_loss"] == metrics["content_loss"]


def test_cli_run_writes_checkpoint_samples_and_eval(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    rc = main(["train", "srresnet", "--steps", "4", "--out", str(out), "--seed", "3", "--no-progress",
               "--set", "blocks=1", "--set", "channels=8", "--set", "batch_size=2", "--set", "lr_patch=8",
               "--set", "sample_every=2"])
    assert rc == 0
    assert capsys.readouterr().out.strip() == str(out / "checkpoint.pt")
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step_000002.png", "step_000004.png"]
    grid = np.asarray(Image.open(out / "samples" / "step_000004.png"))
    assert grid.shape == (4 * 128, 3 * 128, 3) and grid.std() > 10  # 4 crops x (bicubic | SR | HR)
    payload = load_checkpoint(out / "checkpoint.pt")
    assert payload["config"]["seed"] == 3 and payload["step"] == 4
    assert json.loads((out / "eval.json").read_text())["step"] == 4


@pytest.mark.parametrize(
    "args, reason",
    [
        (["srresnet", "--steps", "1", "--set", "colour=red"], "unknown config key(s) colour"),
        (["srresnet", "--steps", "1", "--config", "/no/such.yaml"], "config file /no/such.yaml: no such file"),
        (["srresnet", "--steps", "1", "--data-dir", "/no/such/dir"], "data folder /no/such/dir: no such directory"),
        (["srresnet", "--steps", "1", "--resume"], "--resume: no checkpoint at"),
        (["srresnet"], "say how long to train"),
        (["srresnet", "--steps", "1", "--vgg-weights", "v.pth"], "unknown config key(s) vgg_weights"),
        (["srgan", "--steps", "1", "--vgg-weights", "/no/vgg.pth", "--set", "blocks=1", "--set", "channels=8"],
         "VGG19 weights /no/vgg.pth: no such file"),
    ],
)
def test_cli_user_errors_exit_2_with_one_line(tmp_path, capsys, args, reason) -> None:
    rc = main(["train", *args, "--out", str(tmp_path / "o"), "--no-progress"])
    last = capsys.readouterr().err.strip().splitlines()[-1]  # earlier lines are the training log
    assert rc == 2
    assert last.startswith("ganserve train: error:") and reason in last


def test_cli_bad_flag_and_model_exit_2(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train", "srresnet", "--steps", "1", "--bogus"])
    assert exc.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err
    assert main(["train", "esrgan", "--steps", "1"]) == 2
    assert "unknown model 'esrgan'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0 and "srgan, srresnet" in capsys.readouterr().out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_saves_a_checkpoint_then_exits(tmp_path, sig) -> None:
    out, data = tmp_path / "run", tmp_path / "photos"
    data.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(data / "a.png")
    cmd = [sys.executable, "-m", "ganserve.pipeline.cli", "train", "srresnet", "--budget-minutes", "5", "--out", str(out),
           "--no-progress", "--data-dir", str(data), "--set", "blocks=1", "--set", "channels=8", "--set", "batch_size=2",
           "--set", "lr_patch=8", "--set", "log_every=1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 60
    log = out / "metrics.jsonl"
    while time.monotonic() < deadline and not (log.exists() and '"kind": "train"' in log.read_text()):
        time.sleep(0.2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    payload = load_checkpoint(out / "checkpoint.pt")
    assert payload["metrics"]["interrupted"] is True and payload["step"] >= 1
    assert "stop requested" in err and "checkpoint saved" in err and "continue with --resume" in err
    resumed = train("srresnet", {}, steps=payload["step"] + 1, out_dir=out, resume=True, progress=False)
    assert load_checkpoint(resumed)["step"] == payload["step"] + 1


def test_export_spec_is_complete(tmp_path, tiny) -> None:
    ck = train("srresnet", tiny, steps=1, out_dir=tmp_path, progress=False)
    app = build_from_checkpoint(ck)
    spec = app.export_spec()
    assert (spec.inputs[0].name, spec.outputs[0].name, spec.inputs[0].shape) == ("lr", "sr", [3, -1, -1])
    assert spec.inputs[0].value_range == [0.0, 1.0] == spec.outputs[0].value_range
    assert (spec.task, spec.scale, spec.spatial_multiple, spec.tile_safe, spec.quality_key) == (
        "super_resolution", 4, 1, True, "psnr_y")
    assert [p["lr"].shape for p in spec.parity_inputs] == [(1, 3, 32, 32), (2, 3, 48, 40)]
    assert not spec.module.training
    with torch.no_grad():
        out = spec.module(torch.from_numpy(spec.parity_inputs[1]["lr"]) * 4.0)
    assert out.shape == (2, 3, 192, 160) and float(out.min()) >= 0.0 and float(out.max()) <= 1.0

    def predictor(inputs):
        with torch.no_grad():
            return {"sr": spec.module(torch.from_numpy(inputs["lr"])).numpy()}

    res = spec.evaluate(predictor)
    assert res["psnr_y"] == pytest.approx(app.evaluate()["psnr_y"], abs=1e-4)
    batches = list(spec.calibration())
    assert len(batches) == CALIBRATION_BATCHES and batches[0]["lr"].shape == (1, 3, 32, 32)
    assert spec.card_extra["steps"] == 1 and spec.card_extra["training_data"]["source"] == "builtin"


def test_srgan_with_vgg_weights_uses_them(tmp_path, tiny_gan) -> None:
    from ganserve.training.networks.vgg import VGG19_RELU_INDEX, VGG19Features

    net = VGG19Features(VGG19_RELU_INDEX["2_2"])
    vgg = tmp_path / "vgg19.pth"
    torch.save({f"features.{k}": v for k, v in net.features.state_dict().items()}, vgg)
    ck = train("srgan", {**tiny_gan, "vgg_weights": str(vgg), "vgg_layer": "2_2"}, steps=2,
               out_dir=tmp_path / "run", progress=False)
    payload = load_checkpoint(ck)
    assert payload["metrics"]["content_loss"].startswith("vgg19 relu2_2 feature MSE")
    assert payload["metrics"]["losses"]["loss_content"] > 0
    assert not any(k.startswith("content") or "vgg" in k for k in payload["state"])  # the loss net is not saved


def test_budget_stops_the_run_and_cosine_schedule_is_logged(tmp_path, tiny) -> None:
    ck = train("srresnet", {**tiny, "lr": 1e-3, "lr_schedule": "cosine"}, budget_minutes=0.03,
               out_dir=tmp_path / "budget", progress=False)
    payload = load_checkpoint(ck)
    assert payload["step"] >= 1 and 1.5 <= payload["metrics"]["elapsed_seconds"] < 30
    train("srresnet", {**tiny, "lr": 1e-3, "lr_schedule": "cosine", "lr_min_factor": 0.1}, steps=4,
          out_dir=tmp_path / "steps", progress=False)
    rows = [json.loads(x) for x in (tmp_path / "steps" / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in rows if r["kind"] == "train"]
    assert lrs == pytest.approx([1e-3 * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * s / 4))) for s in range(4)])


def test_scale_two(tmp_path, tiny) -> None:
    ck = train("srresnet", {**tiny, "scale": 2}, steps=2, out_dir=tmp_path, progress=False)
    spec = build_from_checkpoint(ck).export_spec()
    assert spec.scale == 2
    with torch.no_grad():
        assert spec.module(torch.from_numpy(spec.parity_inputs[0]["lr"])).shape == (1, 3, 64, 64)
    assert load_checkpoint(ck)["metrics"]["eval"]["bicubic_psnr_y"] > 28  # x2 bicubic beats x4 bicubic
