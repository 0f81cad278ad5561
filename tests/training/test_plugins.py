"""Plugins: an application and its network in a module outside the repository, found through GANSERVE_PLUGINS or
the ``ganserve.applications`` entry-point group, train, export and ship like the built-in ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ganserve.core.errors import GanserveError
from ganserve.pipeline.cli import main
from ganserve.training import registry
from ganserve.training.checkpoint import load_checkpoint
from ganserve.training.networks import available_networks
from ganserve.training.plugins import ENTRY_POINT_GROUP, PLUGINS_ENV

PLUGIN = '''
"""A ganserve plugin: one SR network and one application that trains it on a pixel loss."""

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ganserve.training.applications.sr_base import SRApplication, SRConfig
from ganserve.training.networks import register_network
from ganserve.training.networks.specs import network_field
from ganserve.training.registry import register_model


@register_network("{net}")
class PluginNet(nn.Module):
    """conv, ReLU, conv to scale^2 sub-pixels, pixel shuffle."""

    def __init__(self, scale: int = 4, features: int = 4) -> None:
        super().__init__()
        self.scale = scale
        self.body = nn.Sequential(nn.Conv2d(3, features, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(features, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))

    def describe(self) -> str:
        return f"plugin net {{self.body[0].out_channels}} features, x{{self.scale}}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@dataclass
class PluginConfig(SRConfig):
    generator: dict[str, Any] = network_field("{net}", features=4)


@register_model("{app}", PluginConfig)
class PluginApp(SRApplication):
    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {{"g": self.adam(self.generator, self.config.lr)}}

    def train_step(self, batch: Any, step: int) -> dict[str, float]:
        lr, hr = (t.to(self.device) for t in batch)
        loss = self.pixel_loss(self.generator(lr), hr)
        self.optimize("g", loss)
        return {{"loss_pix": float(loss.detach())}}
'''
TRAIN = ["--no-progress", "--set", "batch_size=2", "--set", "lr_patch=8", "--set", "eval_every=0",
         "--set", "sample_every=0", "--set", "ckpt_every=0"]


def _write_plugin(folder: Path, module: str, app: str, net: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{module}.py").write_text(textwrap.dedent(PLUGIN.format(app=app, net=net)))
    return folder


def test_a_plugin_named_in_the_environment_trains_exports_and_ships(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(_write_plugin(tmp_path / "plugins", "gs_env_plugin", "plugin-sr", "plugin-net")))
    monkeypatch.setenv(PLUGINS_ENV, " gs_env_plugin ,")
    assert "plugin-sr" in registry.available() and "plugin-net" in available_networks()
    run = tmp_path / "run"
    assert main(["train", "plugin-sr", "--steps", "2", "--out", str(run), *TRAIN]) == 0
    ckpt = run / "checkpoint.pt"
    assert load_checkpoint(ckpt)["config"]["generator"] == {"type": "plugin-net", "features": 4}
    assert main(["export", str(ckpt), "--repo", str(tmp_path / "repo"), "--quiet"]) == 0
    card = json.loads((tmp_path / "repo" / "plugin-sr" / "model_card.json").read_text())
    assert card["architecture"] == "plugin-sr: plugin net 4 features, x4"
    assert main(["ship", str(ckpt), "--name", "plugin-sr", "--models-dir", str(tmp_path / "models")]) == 0
    record = json.loads((tmp_path / "models" / "plugin-sr" / "training_record.json").read_text())
    assert record["model"] == "plugin-sr" and "psnr_y" in record["held_out"]


def test_a_plugin_is_found_by_the_command_line_in_a_fresh_process(tmp_path: Path) -> None:
    folder = _write_plugin(tmp_path / "plugins", "gs_cli_plugin", "plugin-cli", "plugin-cli-net")
    env = {**os.environ, PLUGINS_ENV: "gs_cli_plugin",
           "PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "ganserve.pipeline.cli", "train", "plugin-cli", "--steps", "1",
                           "--out", str(out), *TRAIN], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert load_checkpoint(out / "checkpoint.pt")["model"] == "plugin-cli"


def test_an_entry_point_plugin_is_found(tmp_path: Path, monkeypatch) -> None:
    folder = _write_plugin(tmp_path / "site", "gs_ep_plugin", "plugin-ep", "plugin-ep-net")
    info = folder / "gs_ep_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: gs-ep-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nplugin-ep = gs_ep_plugin\n")
    monkeypatch.syspath_prepend(str(folder))
    assert "plugin-ep" in registry.available()
    app = registry.build("plugin-ep", {"generator": {"features": 2}})
    assert app.generator.body[0].out_channels == 2
    assert app.export_spec().architecture == "plugin-ep: plugin net 2 features, x4"


def test_a_plugin_that_fails_to_import_is_a_one_line_error(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "gs_broken_plugin.py").write_text("import torch\nraise RuntimeError('half-written plugin\\nsecond line')\n")
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv(PLUGINS_ENV, "gs_broken_plugin")
    with pytest.raises(GanserveError) as info:
        registry.available()
    assert str(info.value) == ("plugin module 'gs_broken_plugin' (from GANSERVE_PLUGINS) failed to import "
                               "(RuntimeError: half-written plugin)")
    monkeypatch.setenv(PLUGINS_ENV, "gs_no_such_plugin")
    with pytest.raises(GanserveError, match="plugin module 'gs_no_such_plugin' .*ModuleNotFoundError"):
        registry.lookup("srresnet")
    monkeypatch.delenv(PLUGINS_ENV)
    assert "srresnet" in registry.available()
