"""The card's ``ensemble`` entry: a tiny SR export measures the self-ensemble's held-out gain and latency with ONNX
Runtime (checked here against the exported model.onnx run by hand); models it does not apply to say why; cards
without the entry (older exports) still load."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import export_tiny_apps as tiny
from ganserve.core.contract import CARD_FILE, MODEL_FILE, ModelCard
from ganserve.core.ensemble import PASSES, inverse, transform
from ganserve.export.card import build_card
from ganserve.export.exporter import export_checkpoint, read_card
from ganserve.export.self_ensemble import why_not


@pytest.fixture(scope="module")
def exported(upsampler_ckpt: Path, classifier_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("ens") / "repo"
    export_checkpoint(upsampler_ckpt, repo)
    export_checkpoint(classifier_ckpt, repo)
    return repo


def test_a_tiny_sr_export_records_the_gain_and_the_cost(exported: Path) -> None:
    card = read_card(exported / tiny.UPSAMPLER / "1")
    e = card.ensemble
    assert e["applies"] is True and e["passes"] == PASSES and e["metric"] == "psnr"
    assert e["plain"] == pytest.approx(card.metrics["psnr"])  # the card's own fp32 headline figure
    assert e["gain"] == pytest.approx(e["ensemble"] - e["plain"])
    assert e["latency_ms_plain"] > 0 and e["latency_ms_ensemble"] > e["latency_ms_plain"]
    assert e["cost_ratio"] == pytest.approx(e["latency_ms_ensemble"] / e["latency_ms_plain"], rel=0.01)
    assert e["timed_input"] == "48x32" and e["cpu"]
    # the figure is the 8 flips and rotations of the held-out input through the exported model, averaged
    session = ort.InferenceSession(str(exported / tiny.UPSAMPLER / "1" / MODEL_FILE), providers=["CPUExecutionProvider"])
    hr = tiny._photo("coffee")[:, :, :64, :96]
    lr = tiny._down2(hr)
    passes = [inverse(session.run(None, {"lr": np.ascontiguousarray(transform(lr, k))})[0], k) for k in range(PASSES)]
    assert e["ensemble"] == pytest.approx(tiny.psnr(np.mean(passes, axis=0), hr), abs=1e-4)
    assert e["gain"] > 0  # this upsampler's noise averages out


def test_models_it_does_not_apply_to_say_why(exported: Path) -> None:
    e = read_card(exported / tiny.CLASSIFIER / "1").ensemble
    assert e == {"applies": False, "why": e["why"]} and "not an image-to-image model" in e["why"]
    spec = tiny.TinyUpsampler(tiny.UpsamplerConfig()).export_spec()
    card = build_card(spec, "up", 1, "fp32", {}, {}, {}, {}, [])
    assert why_not(spec, card) == ""
    whole = dataclasses.replace(spec, tile_safe=False)
    assert "not tile-safe" in why_not(whole, build_card(whole, "up", 1, "fp32", {}, {}, {}, {}, []))
    unevaluated = dataclasses.replace(spec, evaluate=None)
    assert "no held-out evaluation" in why_not(unevaluated, card)


def test_old_cards_without_the_entry_and_cards_with_unknown_keys_load(exported: Path) -> None:
    data = json.loads((exported / tiny.UPSAMPLER / CARD_FILE).read_text())
    assert "ensemble" in data
    old = {k: v for k, v in data.items() if k != "ensemble"}
    assert ModelCard.from_dict(old).ensemble == {}
    assert ModelCard.from_dict({**data, "a_later_field": {"x": 1}}).ensemble == data["ensemble"]
