"""Configs and checkpoints written before networks were named: old flat keys migrate to network specs exactly,
old checkpoints load strictly and reproduce the outputs their exports recorded, and every recipe still loads."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ganserve.core.errors import GanserveError
from ganserve.core.quality import reference_cases
from ganserve.core.shipped import TRAINING_RECORD, shipped_dir, shipped_entries
from ganserve.training import registry
from ganserve.training.checkpoint import build_from_checkpoint, load_checkpoint, save_checkpoint
from ganserve.training.config import config_dict, load_config_file, parse_set
from ganserve.training.registry import merge_config
from ganserve.training.migrate import RULES, migrate_config, old_keys
from ganserve.training.networks.specs import network_fields

SHIPPED = shipped_dir()  # the checkout's models/ (the suite runs from its root)

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"
ENTRIES = shipped_entries(SHIPPED)

# The network fields every shipped entry's old flat config migrates to, written out by hand.
SHIPPED_NETWORKS = {
    "srresnet": {"generator": {"type": "srresnet", "blocks": 12, "channels": 48, "batch_norm": False,
                               "bicubic_skip": True}},
    "pix2pix": {"generator": {"type": "unet", "depth": 6, "ngf": 16, "max_mult": 4, "norm": "instance", "dropout": 0.5},
                "discriminator": {"type": "patchgan", "ndf": 32, "layers": 3, "norm": "instance", "max_mult": 4}},
    "cyclegan-ab": {"generator": {"type": "resnet-generator", "ngf": 16, "blocks": 6, "norm": "instance",
                                  "residual": True, "upsample": "resize"},
                    "discriminator": {"type": "patchgan", "ndf": 32, "layers": 3, "norm": "instance", "max_mult": 4}},
    "derain": {"generator": {"type": "attentive-generator", "time_steps": 4, "arn_channels": 12, "arn_blocks": 2,
                             "ae_width": 24, "residual": True},
               "discriminator": {"type": "attentive-discriminator", "channels": 16}},
    "face-aging": {"generator": {"type": "age-unet", "channels": 16, "blocks": 3},
                   "discriminator": {"type": "age-projection-discriminator", "channels": 32}},
    "ssgan": {"discriminator": {"type": "ssgan-mlp", "widths": [500, 250, 250], "input_noise": 0.15,
                                "hidden_noise": 0.25},
              "generator": {"type": "ssgan-generator", "widths": [500, 500]}},
    "cvaegan": {"decoder_net": {"type": "conv-decoder"}, "encoder_net": {"type": "conv-encoder"}},
}
SHIPPED_NETWORKS["cyclegan-ba"] = SHIPPED_NETWORKS["cyclegan-ab"]
# Which application each recipe trains (face_judges_cpu.yaml configures the judges' trainer, not an application).
RECIPES = {"srresnet_cpu30": "srresnet", "srresnet_cpu65": "srresnet",
           "srresnet_cpu85": "srresnet", "srgan_cpu": "srgan", "pix2pix_cpu": "pix2pix",
           "pix2pix_edges_cpu": "pix2pix", "cyclegan_cpu": "cyclegan", "cyclegan_resize_cpu": "cyclegan",
           "derain_cpu": "attentive-gan", "face_aging_cpu": "face-aging", "ssgan_digits": "ssgan"}


def test_an_old_srgan_config_migrates_to_the_new_shape_exactly() -> None:
    old = {"seed": 3, "scale": 4, "blocks": 8, "channels": 32, "batch_norm": False, "bicubic_skip": True,
           "pixel_loss": "l1", "d_channels": 16, "adv_weight": 0.001}
    assert migrate_config("srgan", old) == {
        "seed": 3, "scale": 4, "pixel_loss": "l1", "adv_weight": 0.001,
        "generator": {"blocks": 8, "channels": 32, "batch_norm": False, "bicubic_skip": True},
        "discriminator": {"channels": 16},
    }
    config = config_dict(registry.make_config("srgan", old))
    assert config["generator"] == {"type": "srresnet", "blocks": 8, "channels": 32, "batch_norm": False,
                                   "bicubic_skip": True}
    assert config["discriminator"] == {"type": "srgan-discriminator", "channels": 16}
    assert config == config_dict(registry.make_config("srgan", migrate_config("srgan", old)))
    assert migrate_config("srgan", config) == config  # a new-style config passes unchanged


def test_old_keys_with_special_meanings_migrate() -> None:
    # CycleGAN: norm went to both networks, g_norm (when set) overrides it for the generators only
    cyc = migrate_config("cyclegan", {"norm": "batch", "g_norm": "none", "d_layers": 2})
    assert cyc == {"generator": {"norm": "none"}, "discriminator": {"layers": 2, "norm": "batch"}}
    assert migrate_config("cyclegan", {"norm": "batch", "g_norm": ""})["generator"] == {"norm": "batch"}
    # SSGAN: d_arch chose the classifier; the old keys the other one used are dropped
    conv = migrate_config("ssgan", {"d_arch": "conv", "d_widths": "8,16", "hidden_noise": 0.5, "dropout": 0.25})
    assert conv == {"discriminator": {"type": "ssgan-conv", "widths": "8,16", "dropout": 0.25}}
    assert registry.make_config("ssgan", conv).discriminator == {"type": "ssgan-conv", "widths": [8, 16],
                                                                 "dropout": 0.25}
    with pytest.raises(GanserveError, match="d_arch must be one of mlp, conv"):
        migrate_config("ssgan", {"d_arch": "rnn"})


def test_no_old_key_is_a_field_of_the_new_configs() -> None:
    for model in RULES:
        fields = {f.name for f in dataclasses.fields(registry.lookup(model)[1])}
        assert not old_keys(model) & fields, model
        assert {rule.field for rule in RULES[model]} <= set(network_fields(registry.lookup(model)[1])), model


def test_old_set_overrides_layer_over_a_new_style_config() -> None:
    stored = config_dict(registry.make_config("srresnet", {"generator": {"type": "srresnet", "blocks": 8}}))
    c = merge_config("srresnet", stored, parse_set(["blocks=2", "channels=16"]))
    assert c.generator == {"type": "srresnet", "blocks": 2, "channels": 16, "batch_norm": True, "bicubic_skip": False}


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_shipped_configs_migrate_exactly(entry: Path) -> None:
    card = json.loads((entry / TRAINING_RECORD).read_text())
    stored = load_checkpoint(entry / card["file"])["config"]  # written before networks were named
    config = config_dict(registry.make_config(card["model"], stored))
    assert {k: config[k] for k in network_fields(registry.lookup(card["model"])[1])} == SHIPPED_NETWORKS[entry.name]
    kept = {k: v for k, v in stored.items() if k not in old_keys(card["model"])}
    assert {k: config[k] for k in kept} == kept  # every other value comes through unchanged


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_shipped_checkpoints_load_strictly_and_reproduce_their_exported_outputs(entry: Path) -> None:
    """The state dict key names did not change, so the old weights load strictly; the rebuilt export module gives
    the fp32 outputs the export (made by the old code) recorded in the reference set, within its parity tolerance."""
    card = json.loads((entry / TRAINING_RECORD).read_text())
    payload = load_checkpoint(entry / card["file"])
    app = build_from_checkpoint(entry / card["file"], card.get("options") or None)
    # every weight but those of the training-only networks the entry left out (its discriminators)
    removed = tuple(payload.get("removed", ()))
    assert set(removed) <= set(app.training_only)
    assert {k for k in app.state_dict() if k.split(".", 1)[0] not in removed} == set(payload["state"])
    spec = app.export_spec()
    model_card = json.loads((entry / "model_card.json").read_text())
    assert spec.architecture == model_card["architecture"]
    tolerance = model_card["parity"]["tolerance"]
    with np.load(entry / "1" / "reference.npz") as npz:
        cases = reference_cases(npz.items())
    assert cases
    for case in cases:
        with torch.no_grad():
            out = spec.module(*[torch.from_numpy(case.inputs[t.name]) for t in spec.inputs])
        outs = out if isinstance(out, tuple) else (out,)
        for tensor, value in zip(spec.outputs, outs):
            assert np.abs(value.numpy() - case.expected[tensor.name]).max() <= tolerance, tensor.name


def test_a_checkpoint_saved_with_the_old_layout_loads_strictly_with_identical_outputs(tmp_path: Path) -> None:
    """A tiny pix2pix saved the old way (flat network keys in its config) rebuilds into the same networks."""
    old = {"depth": 5, "ngf": 4, "max_mult": 2, "norm": "instance", "dropout": 0.0, "ndf": 4, "d_layers": 2,
           "d_max_mult": 2, "crop": 32}
    torch.manual_seed(0)
    app = registry.build("pix2pix", old)
    config = {k: v for k, v in config_dict(app.config).items() if k not in ("generator", "discriminator")}
    path = save_checkpoint(tmp_path / "old.pt", {"model": "pix2pix", "config": {**config, **old},
                                                 "state": app.state_dict(), "step": 1})
    again = build_from_checkpoint(path)
    assert again.config == app.config
    x = torch.rand(2, 3, 32, 64)
    app.eval()
    with torch.no_grad():
        assert torch.equal(again.generator(x), app.generator(x))
        assert torch.equal(again.discriminator(torch.cat([x, x], 1)), app.discriminator(torch.cat([x, x], 1)))


def test_every_recipe_in_training_configs_loads() -> None:
    files = {p.stem: p for p in CONFIGS.glob("*.yaml")}
    assert set(files) == {*RECIPES, "face_judges_cpu"}
    for stem, model in RECIPES.items():
        values = load_config_file(files[stem])
        assert not old_keys(model) & set(values), stem  # recipes use the new shape
        config = merge_config(model, load_config_file(files[stem]))
        registry.build(model, config)  # builds the networks it names
    judges = load_config_file(files["face_judges_cpu"])
    assert set(judges) <= {"minutes", "identities", "per_identity", "seed"}
