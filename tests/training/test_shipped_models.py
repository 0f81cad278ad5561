"""Every shipped model is what its card says: the recorded config builds it, the weights load, evaluating them on the
held-out data reproduces the recorded metrics, and models/ serves as a model repository as it is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ganserve.core.contract import ModelCard
from ganserve.serving.client import ImagesClient
from ganserve.serving.server import ServerThread
from ganserve.training.checkpoint import build_from_checkpoint, load_checkpoint
from ganserve.core.shipped import TRAINING_RECORD, shipped_dir, shipped_entries
from ganserve.pipeline.ship import ENTRY_LIMIT, TOTAL_LIMIT, VOLATILE_KEYS
from local_server import server_config

SHIPPED = shipped_dir()  # the checkout's models/ (the suite runs from its root)

ENTRIES = shipped_entries(SHIPPED)


def test_the_project_ships_models() -> None:
    assert "srresnet" in [e.name for e in ENTRIES]
    # the project's own entries are trained here; imported weights may go to a user's models folder, never here
    assert not [e.name for e in ENTRIES if "imported" in json.loads((e / TRAINING_RECORD).read_text())]


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_shipped_model_reproduces_its_card(entry: Path) -> None:
    card = json.loads((entry / TRAINING_RECORD).read_text())
    ckpt = entry / card["file"]
    assert sum(f.stat().st_size for f in entry.rglob("*") if f.is_file()) <= ENTRY_LIMIT
    payload = load_checkpoint(ckpt)
    assert payload["model"] == card["model"] and payload["config"] == card["config"]
    assert payload["step"] == card["training"]["steps"] and not payload["optim"]
    app = build_from_checkpoint(ckpt, card.get("options") or None)
    assert app.config.seed == card["seed"]
    torch.manual_seed(0)
    metrics = app.evaluate()
    recorded = {k: v for k, v in card["held_out"].items() if k not in VOLATILE_KEYS}
    assert card["quality_key"] in recorded
    for key, value in recorded.items():
        assert metrics[key] == pytest.approx(value, rel=1e-3, abs=1e-3), key
    exported = ModelCard.load(entry / "model_card.json")  # the ONNX beside it comes from this very checkpoint
    assert exported.metrics[card["quality_key"]] == pytest.approx(recorded[card["quality_key"]], rel=1e-3, abs=1e-3)


def test_all_shipped_models_fit_the_budget() -> None:
    assert sum(f.stat().st_size for f in SHIPPED.rglob("*") if f.is_file()) <= TOTAL_LIMIT


def test_models_folder_serves_as_a_repository() -> None:
    config = server_config(SHIPPED, grace_seconds=2)
    server = ServerThread(config)
    server.start()
    try:
        with ImagesClient(f"127.0.0.1:{server.port}") as client:
            listed = {m.name: m for m in client.list_models().models}
        assert set(listed) == {e.name for e in ENTRIES}
        assert all(m.state == "READY" for m in listed.values()), {n: m.reason for n, m in listed.items()}
    finally:
        server.stop()
