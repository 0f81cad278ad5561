"""Registry and config layering: defaults, YAML/JSON file, --set overrides, typed coercion, clear errors."""

from __future__ import annotations

import json

import pytest

from ganserve.core.errors import GanserveError
from ganserve.training import registry
from ganserve.training.config import config_dict, load_config_file, parse_set
from ganserve.training.registry import merge_config
from ganserve.training.applications.srgan import SRGANConfig
from ganserve.training.applications.srresnet import SRResNetConfig
from ganserve.training.schedule import lr_factor


def test_registry_lists_and_builds_both_sr_models() -> None:
    assert {"srresnet", "srgan"} <= set(registry.available())
    app_cls, cfg_cls = registry.lookup("srgan")
    assert cfg_cls is SRGANConfig and app_cls.model_name == "srgan"
    app = registry.build("srresnet", {"blocks": 2, "channels": 8})
    assert len(app.generator.body) == 2
    assert app.generator.head[0].out_channels == 8


def test_unknown_model_and_key_are_clear_errors() -> None:
    with pytest.raises(GanserveError, match="unknown model 'nope'.*srresnet"):
        registry.lookup("nope")
    with pytest.raises(GanserveError, match="unknown config key.*colour.*known:.*generator"):
        registry.make_config("srresnet", {"colour": 1})


def test_defaults_are_the_paper_network() -> None:
    c = registry.make_config("srresnet")
    assert (c.scale, c.pixel_loss, c.lr_patch) == (4, "mse", 24)
    assert c.generator == {"type": "srresnet", "blocks": 16, "channels": 64, "batch_norm": True, "bicubic_skip": False}
    g = registry.make_config("srgan")
    assert g.adv_weight == pytest.approx(1e-3) and g.adversarial == "nonsaturating" and g.vgg_layer == "5_4"


def test_file_then_overrides_with_types(tmp_path) -> None:
    yml = tmp_path / "run.yaml"
    yml.write_text("lr: 5.0e-4\nbatch_norm: false\nblocks: 8\npixel_loss: l1\n")
    c = merge_config("srresnet", load_config_file(yml), parse_set(["blocks=4", "lr=2e-4", "lr_schedule=cosine"]))
    assert isinstance(c, SRResNetConfig)
    assert (c.generator["blocks"], c.generator["batch_norm"], c.pixel_loss, c.lr_schedule) == (4, False, "l1", "cosine")
    assert c.lr == pytest.approx(2e-4) and isinstance(c.lr, float)
    js = tmp_path / "run.json"
    js.write_text(json.dumps({"channels": 32, "batch_norm": "yes"}))
    c = merge_config("srresnet", load_config_file(js), {})
    assert (c.generator["channels"], c.generator["batch_norm"]) == (32, True)


@pytest.mark.parametrize(
    "items, message",
    [(["blocks"], "expected key=value"), (["blocks=many"], "blocks='many': expected int"),
     (["batch_norm=maybe"], "expected true/false"), (["lr=fast"], "expected float")],
)
def test_bad_overrides(items, message) -> None:
    with pytest.raises(GanserveError, match=message):
        merge_config("srresnet", None, parse_set(items))


def test_layers_merge_in_order_with_types() -> None:
    """Stored config, then file values, then --set strings: later layers win, every value typed, None skipped."""
    stored = config_dict(registry.make_config("srresnet", {"blocks": 8, "channels": 32}))
    c = merge_config("srresnet", stored, None, {"blocks": 4, "lr": "2e-4"}, parse_set(["blocks=2", "batch_norm=no"]))
    assert (c.generator["blocks"], c.generator["channels"], c.generator["batch_norm"]) == (2, 32, False)
    assert c.lr == pytest.approx(2e-4) and isinstance(c.lr, float)
    assert config_dict(merge_config("srresnet", stored)) == stored  # a stored config comes back unchanged
    assert merge_config("srresnet") == registry.make_config("srresnet")
    with pytest.raises(GanserveError, match="unknown config key.*colour"):
        merge_config("srresnet", stored, {"colour": "1"})


def test_bad_config_files(tmp_path) -> None:
    with pytest.raises(GanserveError, match="no such file"):
        merge_config("srresnet", load_config_file(tmp_path / "missing.yaml"))
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(GanserveError, match="must hold a mapping"):
        merge_config("srresnet", load_config_file(bad))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(GanserveError, match="unreadable"):
        merge_config("srresnet", load_config_file(broken))


def test_bad_values_are_refused_at_build() -> None:
    with pytest.raises(GanserveError, match="pixel_loss"):
        registry.build("srresnet", {"pixel_loss": "l3"})
    with pytest.raises(GanserveError, match="scale must be"):
        registry.build("srresnet", {"scale": 3})
    with pytest.raises(GanserveError, match="unknown adversarial objective 'wasser'"):
        registry.build("srgan", {"adversarial": "wasser", "channels": 8, "blocks": 1, "d_channels": 4})


def test_lr_schedules() -> None:
    assert lr_factor("constant", 0.7, 100) == 1.0
    assert lr_factor("step", 0.49, 10) == 1.0 and lr_factor("step", 0.5, 10) == pytest.approx(0.1)
    assert lr_factor("cosine", 0.0, 0) == pytest.approx(1.0)
    assert lr_factor("cosine", 0.5, 50, min_factor=0.1) == pytest.approx(0.55)
    assert lr_factor("cosine", 1.0, 99, min_factor=0.1) == pytest.approx(0.1)
    assert lr_factor("constant", 0.0, 4, warmup_steps=10) == pytest.approx(0.5)
    with pytest.raises(GanserveError, match="lr_schedule"):
        lr_factor("linear", 0.1, 1)


def test_shipped_recipes_resolve() -> None:
    from pathlib import Path

    configs = Path(__file__).resolve().parents[2] / "training" / "configs"
    pre = merge_config("srresnet", load_config_file(configs / "srresnet_cpu30.yaml"))
    gan = merge_config("srgan", load_config_file(configs / "srgan_cpu.yaml"), {"init_from": "x.pt"})
    assert pre.generator == {"type": "srresnet", "blocks": 8, "channels": 32, "batch_norm": False, "bicubic_skip": True}
    assert (pre.pixel_loss, pre.lr_schedule) == ("l1", "cosine")
    assert (gan.scale, gan.generator) == (pre.scale, pre.generator)  # the fine-tune takes the pre-trained generator
