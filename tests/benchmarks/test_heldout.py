"""benchmarks/heldout.py end to end: tiny SR and keep_luma colouriser checkpoints exported to a repository, a real
server, both photo sets through the image API (with ensemble: 8 for SR), the spread over images written out."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ganserve.benchmarks.heldout import main
from ganserve.export.exporter import export_checkpoint
from ganserve.training.data.images import BUILTIN_EVAL_SET, eval_set
from ganserve.training.trainer import train

TINY = {"log_every": 1, "eval_every": 0, "sample_every": 0, "ckpt_every": 0, "batch_size": 2}


def test_both_sets_through_the_server(tmp_path: Path) -> None:
    sr = train("srresnet", {**TINY, "lr_patch": 8, "generator": {"type": "srresnet", "blocks": 1, "channels": 8}},
               steps=2, out_dir=tmp_path / "sr", progress=False)
    colour = train("pix2pix", {**TINY, "task": "colour", "keep_luma": True, "chroma_sigma": 2.0, "depth": 5, "ngf": 4,
                               "max_mult": 2, "ndf": 4, "d_max_mult": 2, "crop": 32},
                   steps=2, out_dir=tmp_path / "p2p", progress=False)
    repo = tmp_path / "repo"
    export_checkpoint(sr, repo, name="sr", progress=False)
    export_checkpoint(colour, repo, name="colour", progress=False)
    out = tmp_path / "out"
    assert main(["--repo", str(repo), "--sr", "sr", "--colour", "colour", "--ensemble", "--out", str(out)]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["cpu"]
    sr_sets, colour_sets = result["models"]["sr"], result["models"]["colour"]
    assert sr_sets["headline"]["images"] == 2 and sr_sets["eval"]["images"] == len(BUILTIN_EVAL_SET)
    assert colour_sets["eval"]["images"] == len(eval_set(colour_only=True)) >= 8
    for row in sr_sets["eval"]["rows"]:
        assert math.isfinite(row["psnr_y"]) and math.isfinite(row["ensemble_psnr_y"]) and row["ensemble_ms"] > 0
        assert abs(row["psnr_gain_y"] - (row["psnr_y"] - row["bicubic_psnr_y"])) < 1e-9
    summary = sr_sets["eval"]["summary"]["psnr_gain_y"]
    assert summary["min"] <= summary["mean"] <= summary["max"] and summary["sd"] >= 0
    # the colouriser keeps the light: the 8-bit reply's luma is the grey input's within rounding and gamut clipping
    for rows in (colour_sets["headline"]["rows"], colour_sets["eval"]["rows"]):
        assert all(r["luma_levels_max"] <= 1.0 for r in rows)
    text = (out / "results.md").read_text()
    assert "skimage:motorcycle_left[0:250,0:247]" in text and "| psnr_gain_y |" in text


def test_an_unknown_model_is_refused_before_serving(tmp_path: Path, capsys) -> None:
    (tmp_path / "repo").mkdir()
    assert main(["--repo", str(tmp_path / "repo"), "--sr", "nothing", "--out", str(tmp_path / "out")]) == 2
    assert "no model 'nothing'" in capsys.readouterr().err
