"""`ganserve ship` and `ganserve train --from`: a tiny SR model shipped into a temporary models folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ganserve.pipeline.cli import main
from ganserve.core.contract import ModelCard, model_versions
from ganserve.core.errors import GanserveError
from ganserve.training.checkpoint import build_from_checkpoint, load_checkpoint
from ganserve.core.shipped import TRAINING_RECORD, read_entry
from ganserve.pipeline.ship import VOLATILE_KEYS, ship
from ganserve.training.trainer import train

TINY = {"blocks": 1, "channels": 8, "batch_size": 2, "lr_patch": 12, "eval_every": 0, "sample_every": 0, "ckpt_every": 0}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ship")
    return train("srresnet", TINY, steps=3, out_dir=root / "run", progress=False), root


def test_ship_writes_a_servable_entry_with_its_card(trained: tuple[Path, Path]) -> None:
    ckpt, root = trained
    entry = ship(ckpt, "tiny-sr", command="ganserve train srresnet --steps 3", target="none", models_dir=root / "models",
                 progress=False)
    card = read_entry(entry)
    assert card["model"] == "srresnet" and card["quality_key"] == "psnr_y"
    assert card["config"] == load_checkpoint(ckpt)["config"] and card["training"]["steps"] == 3
    assert card["training"]["steps_target"] == 3 and "logical CPUs" in card["training"]["cpu"]
    assert "shipping machine" not in card["training"]["cpu"]  # the trainer recorded the CPU it ran on
    # the card's headline and its bicubic baseline, recomputed here from the shipped weights and the held-out photos
    held = card["held_out"]
    model_psnr, bicubic_psnr = _psnr_y_by_hand(entry / "checkpoint.pt")
    assert held["eval_images"] == 2.0 and held["psnr_y"] == pytest.approx(model_psnr, abs=1e-5)
    assert held["bicubic_psnr_y"] == pytest.approx(bicubic_psnr, abs=1e-5)
    assert held["psnr_gain_y"] == pytest.approx(model_psnr - bicubic_psnr, abs=1e-5)
    again = build_from_checkpoint(entry / "checkpoint.pt").evaluate()  # and the whole card from a fresh evaluation
    assert {k: v for k, v in held.items() if k not in VOLATILE_KEYS} == pytest.approx(
        {k: again[k] for k in held if k not in VOLATILE_KEYS}, abs=1e-5)
    assert not load_checkpoint(entry / "checkpoint.pt")["optim"]  # optimizer state stripped
    assert model_versions(entry) == [1] and ModelCard.load(entry / "model_card.json").name == "tiny-sr"
    assert (entry / "metrics.jsonl").is_file() and (entry / "config.pbtxt").is_file()
    # the same checkpoint again does not beat itself: refused, and the entry is untouched
    before = (entry / TRAINING_RECORD).read_bytes()
    with pytest.raises(GanserveError, match="does not beat"):
        ship(ckpt, "tiny-sr", models_dir=root / "models", progress=False)
    assert (entry / TRAINING_RECORD).read_bytes() == before
    assert sorted(p.name for p in (root / "models").iterdir()) == ["tiny-sr"]  # no staging folder left behind


def test_export_and_serve_start_from_a_shipped_entry(trained: tuple[Path, Path], tmp_path: Path) -> None:
    ckpt, root = trained
    entry = root / "models" / "tiny-sr"
    if not entry.exists():
        ship(ckpt, "tiny-sr", models_dir=root / "models", progress=False)
    assert main(["export", str(entry), "--repo", str(tmp_path / "repo"), "--quiet"]) == 0
    card = ModelCard.load(tmp_path / "repo" / "tiny-sr" / "model_card.json")  # named after the entry
    assert card.metrics["psnr_y"] == pytest.approx(read_entry(entry)["held_out"]["psnr_y"], abs=1e-3)


def test_reexport_rewrites_the_model_and_keeps_the_checkpoint_and_record(trained: tuple[Path, Path], capsys) -> None:
    """`ganserve ship --reexport`: today's exporter over a shipped entry, with the shipped variants that pass the
    quality rule; the checkpoint, training record and log are the same bytes, and nothing is left half-written."""
    ckpt, root = trained
    models = root / "models"
    entry = models / "tiny-sr"
    if not entry.exists():
        ship(ckpt, "tiny-sr", models_dir=models, progress=False)
    kept = {n: (entry / n).read_bytes() for n in ("checkpoint.pt", TRAINING_RECORD, "metrics.jsonl")}
    (entry / "1" / "model.onnx").write_bytes(b"stale")  # what an older exporter left
    assert main(["ship", "--reexport", "tiny-sr", "--models-dir", str(models)]) == 0
    assert {n: (entry / n).read_bytes() for n in kept} == kept
    assert (entry / "1" / "model.onnx").read_bytes() != b"stale"
    card = ModelCard.load(entry / "model_card.json")
    assert set(card.parity.get("variants", {})) | set(card.parity.get("variants_dropped", {})) == {"int8"}
    assert (entry / "1" / "model.int8.onnx").is_file() == ("int8" in card.parity.get("variants", {}))
    assert sorted(p.name for p in models.iterdir()) == ["tiny-sr"]
    assert main(["ship", "--reexport", "nothing-here", "--models-dir", str(models)]) == 2
    assert "no shipped entry nothing-here" in capsys.readouterr().err


def test_ship_refuses_user_data_and_bad_input(trained: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    ckpt, root = trained
    user = train("srresnet", {**TINY, "data_dir": str(_photos(tmp_path))}, steps=1, out_dir=tmp_path / "u", progress=False)
    with pytest.raises(GanserveError, match="user data"):
        ship(user, "u", models_dir=tmp_path / "models", progress=False)
    assert main(["ship", str(tmp_path / "missing.pt"), "--name", "x"]) == 2
    assert main(["ship", str(ckpt), "--name", "bad name!", "--models-dir", str(tmp_path / "m")]) == 2
    assert main(["train", "--from", str(tmp_path)]) == 2  # not an entry
    capsys.readouterr()
    assert main(["ship", str(tmp_path / "missing.pt"), "--name", "x", "--command", "ganserve train srresnet"]) == 2
    assert capsys.readouterr().err.startswith("ganserve ship: error:")  # --command does not clobber the subcommand


def test_train_from_reruns_the_recorded_training(trained: tuple[Path, Path], tmp_path: Path) -> None:
    ckpt, root = trained
    entry = root / "models" / "tiny-sr"
    if not entry.exists():
        ship(ckpt, "tiny-sr", models_dir=root / "models", progress=False)
    out = tmp_path / "again"
    assert main(["train", "--from", str(entry), "--out", str(out), "--no-progress"]) == 0
    again = load_checkpoint(out / "checkpoint.pt")
    card = json.loads((entry / TRAINING_RECORD).read_text())
    assert again["config"] == card["config"] and again["step"] == card["training"]["steps"]
    assert main(["train", "srgan", "--from", str(entry)]) == 2  # the entry records srresnet


def _psnr_y_by_hand(checkpoint: Path) -> tuple[float, float]:
    """Mean PSNR on BT.601 luma (range 255, ``scale`` pixels of border cropped) over the held-out photos, of the
    generator's output and of plain bicubic upscaling, written out here with numpy rather than the project's metrics."""
    import math

    import numpy as np
    import torch
    import torch.nn.functional as F

    from ganserve.training.applications.sr_eval import held_out_pairs

    app = build_from_checkpoint(checkpoint)
    s = app.config.scale
    luma = np.array([65.481, 128.553, 24.966])

    def psnr(img: np.ndarray, hr: np.ndarray) -> float:
        diff = ((img - hr) @ luma)[s:-s, s:-s]  # the constant 16 of Y cancels
        return 10 * math.log10(255.0**2 / float(np.mean(diff**2)))

    model, bicubic = [], []
    for hr, lr in held_out_pairs(s):
        x = torch.from_numpy(lr)
        with torch.no_grad():
            out = app.generator.eval()(x).clamp(0, 1)
        up = F.interpolate(x, scale_factor=s, mode="bicubic", align_corners=False).clamp(0, 1)
        model.append(psnr(out[0].permute(1, 2, 0).double().numpy(), hr))
        bicubic.append(psnr(up[0].permute(1, 2, 0).double().numpy(), hr))
    return sum(model) / len(model), sum(bicubic) / len(bicubic)


def _photos(folder: Path) -> Path:
    import numpy as np
    from PIL import Image

    folder = folder / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder
