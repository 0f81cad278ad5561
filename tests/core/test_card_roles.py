"""The one rule for which image-API RPC serves a model, from its card's roles; the servicer, the demo and the bench
all ask it (the bench's `--model all` is checked here against a repository of each kind)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ganserve.benchmarks.bench import image_models
from ganserve.core.card_roles import roles_text, rpc_by_outputs, rpc_for, unfillable, unfilled
from ganserve.core.contract import CARD_FILE, ModelCard, TensorSpec


def t(name: str, role: str, shape: list[int] | None = None) -> TensorSpec:
    return TensorSpec(name, shape or [3, -1, -1], role=role)


CARDS = {
    "sr": ([t("lr", "image")], [t("hr", "image")], "Transform"),
    "aging": ([t("face", "image"), t("age", "condition", [1])], [t("out", "image")], "Transform"),
    "derain": ([t("x", "image"), t("m", "mask", [1, -1, -1])], [t("y", "image")], "Transform"),
    "classifier": ([t("x", "image")], [t("p", "probabilities", [10])], "Classify"),
    "generator": ([t("z", "latent", [64]), t("digit", "condition", [1])], [t("img", "image")], "Generate"),
    "two-images": ([t("a", "image"), t("b", "image")], [t("y", "image")], ""),  # a second image: ModelInfer only
    "image-and-latent": ([t("x", "image"), t("z", "latent", [8])], [t("y", "image")], ""),
    "features": ([t("x", "image")], [t("f", "tensor", [128])], ""),
}


def card(name: str) -> ModelCard:
    inputs, outputs, _ = CARDS[name]
    return ModelCard(name=name, task="test", architecture="test", inputs=inputs, outputs=outputs)


@pytest.mark.parametrize("name", CARDS)
def test_the_rpc_follows_the_roles(name: str) -> None:
    assert rpc_for(card(name)) == CARDS[name][2]


def test_what_an_rpc_cannot_fill_is_named() -> None:
    c = card("image-and-latent")
    assert rpc_by_outputs(c) == "Transform" and [s.name for s in unfillable(c, "Transform")] == ["z"]
    assert [s.name for s in unfillable(card("two-images"), "Transform")] == ["b"]
    assert [s.name for s in unfilled(card("aging"), ["face"])] == ["age"]
    assert roles_text(card("aging").inputs) == "face (image), age (condition)"


def test_the_bench_benches_what_transform_serves(tmp_path: Path) -> None:
    for name in CARDS:
        (tmp_path / name / "1").mkdir(parents=True)
        (tmp_path / name / "1" / "model.onnx").write_bytes(b"")  # a version folder is all image_models looks for
        (tmp_path / name / CARD_FILE).write_text(card(name).to_json())
    assert image_models(tmp_path) == sorted(n for n, (_, _, rpc) in CARDS.items() if rpc == "Transform")
