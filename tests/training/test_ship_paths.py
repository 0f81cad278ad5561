"""`ganserve ship` paths beyond the first entry: a better checkpoint replaces an entry in one swap, --force replaces
one that is not better, an interrupted checkpoint is refused, and the 10 MB entry and 90 MB folder limits refuse
with nothing written (the real limits, reached by real files)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from ganserve.core.errors import CheckpointError, GanserveError
from ganserve.core.shipped import TRAINING_RECORD, read_entry
from ganserve.pipeline.cli import main
from ganserve.pipeline.ship import ENTRY_LIMIT, TOTAL_LIMIT, ship
from ganserve.training.checkpoint import load_checkpoint, save_checkpoint
from ganserve.training.trainer import train

TINY = {"blocks": 1, "channels": 8, "batch_size": 2, "lr_patch": 12, "eval_every": 0, "sample_every": 0, "ckpt_every": 0}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train("srresnet", TINY, steps=2, out_dir=tmp_path_factory.mktemp("ship-paths") / "run", progress=False)


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _worsen(entry: Path, by: float) -> float:
    """Lower the recorded headline of a shipped entry (as if an older, worse model had been shipped there)."""
    record = json.loads((entry / TRAINING_RECORD).read_text())
    record["held_out"][record["quality_key"]] -= by
    (entry / TRAINING_RECORD).write_text(json.dumps(record))
    return record["held_out"][record["quality_key"]]


def test_a_better_checkpoint_replaces_the_entry_in_one_swap(trained: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    entry = ship(trained, "sr", command="first", models_dir=models, progress=False)
    shipped = read_entry(entry)["held_out"]["psnr_y"]
    worse = _worsen(entry, 1.0)
    (models / ".old-sr").mkdir()  # what an interrupted earlier swap leaves behind
    (models / ".old-sr" / "junk").write_text("x")
    entry = ship(trained, "sr", command="second", models_dir=models, progress=False)
    record = read_entry(entry)
    assert record["command"] == "second" and record["held_out"]["psnr_y"] == pytest.approx(shipped, abs=1e-6)
    assert record["held_out"]["psnr_y"] > worse
    assert _listing(models) == ["sr"]  # no staging folder, no .old- folder left
    assert (entry / "checkpoint.pt").is_file() and (entry / "model_card.json").is_file()


def test_force_replaces_an_entry_that_is_not_better(trained: Path, tmp_path: Path, capsys) -> None:
    models = tmp_path / "models"
    ship(trained, "sr", command="first", models_dir=models, progress=False)
    before = (models / "sr" / TRAINING_RECORD).read_bytes()
    assert main(["ship", str(trained), "--name", "sr", "--models-dir", str(models), "--command", "again"]) == 2
    err = capsys.readouterr().err
    assert "does not beat it (use --force to replace it anyway)" in err and len(err.strip().splitlines()) == 1
    assert (models / "sr" / TRAINING_RECORD).read_bytes() == before
    assert main(["ship", str(trained), "--name", "sr", "--models-dir", str(models), "--command", "forced",
                 "--force"]) == 0
    assert read_entry(models / "sr")["command"] == "forced" and _listing(models) == ["sr"]


def test_an_interrupted_checkpoint_is_refused(trained: Path, tmp_path: Path) -> None:
    payload = load_checkpoint(trained)
    interrupted = save_checkpoint(tmp_path / "stopped.pt",
                                  {**payload, "metrics": {**payload.get("metrics", {}), "interrupted": True}})
    with pytest.raises(CheckpointError, match="an interrupted training; ship a finished one"):
        ship(interrupted, "sr", models_dir=tmp_path / "models", progress=False)
    assert not (tmp_path / "models").exists()


def test_an_entry_over_10_mb_is_refused(trained: Path, tmp_path: Path) -> None:
    # a tiny model whose checkpoint carries 11 MB of other state (as a GAN's discriminator or an EMA copy would):
    # the shipped checkpoint keeps it, so the entry is over the limit
    payload = load_checkpoint(trained)
    big = save_checkpoint(tmp_path / "big.pt", {**payload, "extra_state": torch.zeros(11 * 2**18)})
    models = tmp_path / "models"
    with pytest.raises(GanserveError, match=r"the entry is \d+\.\d MB, over the 10 MB limit") as info:
        ship(big, "big", models_dir=models, progress=False)
    assert float(str(info.value).split("entry is ")[1].split(" MB")[0]) * 2**20 > ENTRY_LIMIT
    assert _listing(models) == []  # the staging folder is gone, no entry written


def test_a_models_folder_over_90_mb_is_refused(trained: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    (models / "judges").mkdir(parents=True)
    with open(models / "judges" / "weights.bin", "wb") as fh:  # sparse: 90 MB of size, no disk used
        fh.truncate(TOTAL_LIMIT - 1024)
    with pytest.raises(GanserveError, match=r"models/ would hold 9\d\.\d MB, over the 90 MB limit"):
        ship(trained, "sr", models_dir=models, progress=False)
    assert _listing(models) == ["judges"]
    os.truncate(models / "judges" / "weights.bin", TOTAL_LIMIT // 2)  # with room again, the same ship succeeds
    assert ship(trained, "sr", models_dir=models, progress=False).is_dir() and _listing(models) == ["judges", "sr"]


def test_train_from_reproduces_the_entrys_card(trained: Path, tmp_path: Path) -> None:
    """`ganserve train --from models/NAME` retrains from the recorded config and seed: the same weights as the
    shipped checkpoint, and so the same held-out figures as the card."""
    entry = ship(trained, "sr", models_dir=tmp_path / "models", progress=False)
    out = tmp_path / "again"
    assert main(["train", "--from", str(entry), "--out", str(out), "--no-progress"]) == 0
    shipped, again = load_checkpoint(entry / "checkpoint.pt"), load_checkpoint(out / "checkpoint.pt")
    assert shipped["state"].keys() == again["state"].keys()
    record = read_entry(entry)
    # an entry stores fp16 weights where its held-out figures hold (the record says which): the retrained float32
    # weights round to exactly the stored ones, and the record keeps the float32 figures beside the stored ones'
    fp16 = record["weights"]["storage"] == "fp16"
    assert all(torch.equal(shipped["state"][k], again["state"][k].half() if fp16 and again["state"][k].is_floating_point()
                           else again["state"][k]) for k in shipped["state"])
    card = record["weights"]["fp32_held_out"] if fp16 else record["held_out"]
    figures = again["metrics"]["eval"]
    assert {k: figures[k] for k in ("psnr_y", "ssim_y", "bicubic_psnr_y")} == pytest.approx(
        {k: card[k] for k in ("psnr_y", "ssim_y", "bicubic_psnr_y")}, abs=1e-6)


def test_reship_keeps_the_record_and_stores_fp16_where_the_figures_hold(trained: Path, tmp_path: Path) -> None:
    """`ganserve ship --reship NAME` ships an entry's own checkpoint again with its recorded command, target and
    conditions: an entry shipped with fp32 weights (as before fp16 storage) comes back with fp16 weights, the same
    held-out figures within the fp16 rule, and evaluation-set figures; an unknown name is refused."""
    models = tmp_path / "models"
    entry = ship(trained, "sr", command="the command", target="the target", note="the conditions", models_dir=models,
                 progress=False)
    payload = load_checkpoint(entry / "checkpoint.pt")  # as entries shipped before fp16 storage hold them: float32
    save_checkpoint(entry / "checkpoint.pt", {**payload, "state": {k: v.float() if v.is_floating_point() else v
                                                                    for k, v in payload["state"].items()}})
    before = read_entry(entry)
    assert main(["ship", "--reship", "sr", "--models-dir", str(models)]) == 0
    after = read_entry(entry)
    assert (after["command"], after["target"], after["training"]["conditions"]) == (
        "the command", "the target", "the conditions")
    assert after["weights"]["storage"] == "fp16"
    assert all(v.dtype == torch.float16 for v in load_checkpoint(entry / "checkpoint.pt")["state"].values()
               if v.is_floating_point())
    assert after["held_out"]["psnr_y"] == pytest.approx(before["held_out"]["psnr_y"], abs=0.01)
    assert after["eval_set"]["eval_images"] == 16 and "psnr_gain_y_min" in after["eval_set"]
    assert _listing(models) == ["sr"]
    assert main(["ship", "--reship", "nothing", "--models-dir", str(models)]) == 2
