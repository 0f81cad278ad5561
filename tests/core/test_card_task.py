"""A model card's task is a descriptive label and a condition may name a default; every shipped card still reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from ganserve.core.contract import ModelCard, TensorSpec
from ganserve.core.errors import RepositoryError

ROOT = Path(__file__).resolve().parents[2]


def _card(task: str, **condition) -> ModelCard:
    return ModelCard(name="m", task=task, architecture="a",
                     inputs=[TensorSpec("image", [3, -1, -1]),
                             TensorSpec("tone", [2], role="condition", layout="NC", **condition)],
                     outputs=[TensorSpec("out", [3, -1, -1])])


@pytest.mark.parametrize("task", ["super_resolution", "colorization", "style-transfer.v2", "x"])
def test_any_short_label_is_a_task(task: str) -> None:
    assert ModelCard.from_dict(_card(task).to_dict()).task == task


@pytest.mark.parametrize("task", ["", " derain", "two words", "a" * 65, "semi/colon"])
def test_a_task_is_a_short_name(task: str) -> None:
    with pytest.raises(RepositoryError, match="must be a short label"):
        _card(task)


def test_condition_default_round_trips_and_is_checked() -> None:
    card = _card("t", labels=["warm", "cool"], default="cool")
    assert ModelCard.from_dict(card.to_dict()).conditions()[0].default == "cool"
    assert [t.name for t in card.conditions()] == ["tone"]
    with pytest.raises(RepositoryError, match="is not one of"):
        _card("t", labels=["warm", "cool"], default="hot")
    with pytest.raises(RepositoryError, match="must be an index"):
        _card("t", default="warm")
    with pytest.raises(RepositoryError, match="only a condition input"):
        TensorSpec("image", [3, -1, -1], default="0")


def test_every_shipped_card_still_reads() -> None:
    cards = sorted((ROOT / "models").glob("*/model_card.json"))
    assert cards
    for path in cards:
        card = ModelCard.load(path)
        assert card.task and all(t.default is None for t in card.inputs)
