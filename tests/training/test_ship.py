"""`ganserve ship` and `ganserve train --from`: a tiny SR model shipped into a temporary models folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ganserve.cli import main
from ganserve.contract import ModelCard, model_versions
from ganserve.errors import GanserveError
from training.checkpoint import load_checkpoint
from training.ship import read_entry, ship
from training.trainer import train

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
    assert card["held_out"]["psnr_y"] > 5 and "bicubic_psnr_y" in card["held_out"]
    assert not load_checkpoint(entry / "checkpoint.pt")["optim"]  # optimizer state stripped
    assert model_versions(entry) == [1] and ModelCard.load(entry / "model_card.json").name == "tiny-sr"
    assert (entry / "metrics.jsonl").is_file() and (entry / "config.pbtxt").is_file()
    # the same checkpoint again does not beat itself: refused, and the entry is untouched
    before = (entry / "card.json").read_bytes()
    with pytest.raises(GanserveError, match="does not beat"):
        ship(ckpt, "tiny-sr", models_dir=root / "models", progress=False)
    assert (entry / "card.json").read_bytes() == before
    assert sorted(p.name for p in (root / "models").iterdir()) == ["tiny-sr"]  # no staging folder left behind


def test_export_and_serve_start_from_a_shipped_entry(trained: tuple[Path, Path], tmp_path: Path) -> None:
    ckpt, root = trained
    entry = root / "models" / "tiny-sr"
    if not entry.exists():
        ship(ckpt, "tiny-sr", models_dir=root / "models", progress=False)
    assert main(["export", str(entry), "--repo", str(tmp_path / "repo"), "--quiet"]) == 0
    card = ModelCard.load(tmp_path / "repo" / "tiny-sr" / "model_card.json")  # named after the entry
    assert card.metrics["psnr_y"] == pytest.approx(read_entry(entry)["held_out"]["psnr_y"], abs=1e-3)


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
    card = json.loads((entry / "card.json").read_text())
    assert again["config"] == card["config"] and again["step"] == card["training"]["steps"]
    assert main(["train", "srgan", "--from", str(entry)]) == 2  # the entry records srresnet


def _photos(folder: Path) -> Path:
    import numpy as np
    from PIL import Image

    folder = folder / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder
