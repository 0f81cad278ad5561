"""Every shipped model is what its card says: the recorded config builds it, the weights load, and evaluating them
on the held-out photos reproduces the recorded metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.checkpoint import build_from_checkpoint, load_checkpoint

SHIPPED = Path(__file__).resolve().parents[2] / "models"
ENTRIES = sorted(p.parent for p in SHIPPED.glob("*/card.json"))


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_shipped_model_reproduces_its_card(entry: Path) -> None:
    card = json.loads((entry / "card.json").read_text())
    ckpt = entry / card["file"]
    assert ckpt.stat().st_size <= 10 * 2**20
    payload = load_checkpoint(ckpt)
    assert payload["config"] == card["config"] and payload["step"] == card["training"]["steps"]
    app = build_from_checkpoint(ckpt)
    metrics = app.evaluate()
    for key in ("psnr_y", "ssim_y", "bicubic_psnr_y"):
        assert metrics[key] == pytest.approx(card["held_out"][key], abs=1e-3), key
    assert metrics["psnr_gain_y"] >= 1.0  # the foundation issue's target, at x4


def test_all_shipped_models_fit_the_budget() -> None:
    assert sum(f.stat().st_size for f in SHIPPED.rglob("*") if f.is_file()) <= 60 * 2**20
