"""Networks by name: the registry's errors, specs in configs (layers, dotted keys, typing), and the SR applications
training a second SR generator registered here, outside the package."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from ganserve.core.errors import GanserveError
from ganserve.training import registry
from ganserve.training.checkpoint import build_from_checkpoint, load_checkpoint
from ganserve.training.config import load_config_file, parse_set
from ganserve.training.registry import merge_config
from ganserve.training.networks import available_networks, build_network, describe_network, register_network
from ganserve.training.networks.specs import merge_spec
from ganserve.training.trainer import train

RUN = {"batch_size": 2, "lr_patch": 8, "log_every": 1, "eval_every": 0, "sample_every": 0, "ckpt_every": 0}
BUILT_IN = {"srresnet", "srgan-discriminator", "unet", "resnet-generator", "patchgan", "attentive-generator",
            "attentive-discriminator", "age-unet", "age-projection-discriminator", "ssgan-mlp", "ssgan-conv",
            "ssgan-generator", "conv-decoder", "conv-encoder", "mlp"}


@register_network("test-tiny-sr")
class TinySR(nn.Module):
    """A second SR generator: one conv, ReLU, one conv to scale^2 sub-pixels, pixel shuffle."""

    def __init__(self, scale: int = 4, features: int = 4) -> None:
        super().__init__()
        self.scale = scale
        self.body = nn.Sequential(nn.Conv2d(3, features, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(features, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@register_network("test-always-x2")
class AlwaysX2(TinySR):
    """Takes a scale but always upscales x2: the SR applications must refuse it at any other scale."""

    def __init__(self, scale: int = 4) -> None:
        super().__init__(2)


def test_builtin_networks_are_registered_by_name() -> None:
    assert BUILT_IN | {"test-tiny-sr"} <= set(available_networks())
    net = build_network({"type": "patchgan", "ndf": 4, "layers": 1}, in_channels=6)
    assert net.network_spec == {"type": "patchgan", "ndf": 4, "layers": 1, "in_channels": 6}
    assert describe_network(net) == "PatchGAN 1 layers x 4"
    tiny = build_network({"type": "test-tiny-sr", "features": 2})
    assert describe_network(tiny) == "test-tiny-sr(features=2)"  # no describe(): the name and its arguments


def test_unknown_type_is_a_one_line_error_naming_the_registered_ones() -> None:
    with pytest.raises(GanserveError) as info:
        registry.build("srgan", {"generator": {"type": "swinir"}})
    message = str(info.value)
    assert "\n" not in message and message.startswith("unknown network type 'swinir'; registered: ")
    assert all(name in message for name in BUILT_IN | {"test-tiny-sr"})
    with pytest.raises(GanserveError, match="expected a network name or a mapping"):
        registry.build("srresnet", {"generator": 5})


def test_bad_arguments_and_duplicate_names_are_clear_errors() -> None:
    with pytest.raises(GanserveError, match="'srresnet': unknown argument.s. colour; accepts: scale, blocks, channels"):
        build_network({"type": "srresnet", "colour": 1})
    with pytest.raises(GanserveError, match="generator.blocks='many': expected int"):
        registry.make_config("srresnet", {"generator": {"blocks": "many"}})
    with pytest.raises(GanserveError, match="'mlp': needs argument.s. in_dim, hidden, out_dim"):
        build_network("mlp")

    class Other(nn.Module):
        """Not the registered srresnet."""

    with pytest.raises(GanserveError, match="network name 'srresnet' registered twice.*registered: .*patchgan"):
        register_network("srresnet")(Other)
    assert register_network("test-tiny-sr")(TinySR) is TinySR  # the same class again is no conflict


def test_an_sr_generator_must_fit_the_application_scale() -> None:
    with pytest.raises(GanserveError, match="generator 'srresnet': scale=2 does not fit here, which needs scale=4"):
        registry.build("srresnet", {"generator": {"scale": 2}})
    with pytest.raises(GanserveError, match="generator 'test-always-x2' upscales x2, but scale is 4"):
        registry.build("srresnet", {"generator": "test-always-x2"})
    assert registry.build("srresnet", {"scale": 2, "generator": "test-always-x2"}).generator.scale == 2


def test_specs_layer_by_type_and_dotted_keys_set_one_argument(tmp_path: Path) -> None:
    base = {"type": "srresnet", "blocks": 8, "channels": 32}
    assert merge_spec(base, {"blocks": 2}) == {"type": "srresnet", "blocks": 2, "channels": 32}
    assert merge_spec(base, {"type": "srresnet", "blocks": 2}) == {"type": "srresnet", "blocks": 2, "channels": 32}
    assert merge_spec(base, {"type": "test-tiny-sr"}) == {"type": "test-tiny-sr"}
    assert merge_spec(base, "test-tiny-sr") == {"type": "test-tiny-sr"}
    recipe = tmp_path / "run.yaml"
    recipe.write_text("generator: {type: srresnet, blocks: 8, channels: 32}\n")
    c = merge_config("srresnet", load_config_file(recipe),
                     parse_set(["generator.blocks=2", "generator.bicubic_skip=yes"]))
    assert c.generator == {"type": "srresnet", "blocks": 2, "channels": 32, "batch_norm": True, "bicubic_skip": True}
    c = merge_config("srresnet", load_config_file(recipe),
                     parse_set(["generator.features=3", "generator.type=test-tiny-sr"]))
    assert c.generator == {"type": "test-tiny-sr", "features": 3}  # the new type starts from its own defaults
    c = merge_config("ssgan", None, parse_set(["discriminator.widths=64,32", "discriminator.input_noise=0"]))
    assert c.discriminator == {"type": "ssgan-mlp", "widths": [64, 32], "input_noise": 0.0, "hidden_noise": 0.5}
    with pytest.raises(GanserveError, match="unknown config key.*colour.blocks"):
        merge_config("srresnet", None, parse_set(["colour.blocks=2"]))


def test_srgan_fine_tunes_a_second_registered_sr_generator(tmp_path: Path) -> None:
    tiny = {**RUN, "generator": {"type": "test-tiny-sr", "features": 4}}
    pre = train("srresnet", tiny, steps=2, out_dir=tmp_path / "pre", progress=False)
    assert load_checkpoint(pre)["config"]["generator"] == {"type": "test-tiny-sr", "features": 4}
    gan_config = {**tiny, "discriminator": {"channels": 4}, "init_from": str(pre)}
    start = train("srgan", gan_config, steps=0, out_dir=tmp_path / "start", progress=False)
    weights = load_checkpoint(pre)["state"]
    assert all(torch.equal(v, weights[k]) for k, v in load_checkpoint(start)["state"].items()
               if k.startswith("generator."))  # init_from loaded the pre-trained generator
    gan = train("srgan", gan_config, steps=3, out_dir=tmp_path / "gan", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "gan" / "metrics.jsonl").read_text().splitlines()]
    losses = [r for r in rows if r["kind"] == "train"]
    assert len(losses) == 3 and all(math.isfinite(r["loss_g"]) and math.isfinite(r["loss_d"]) for r in losses)
    app = build_from_checkpoint(gan)
    assert isinstance(app.generator, TinySR)
    assert not torch.equal(app.generator.body[0].weight, weights["generator.body.0.weight"])  # it trained
    spec = app.export_spec()
    assert spec.architecture == "srgan: test-tiny-sr(features=4, scale=4)"
    lr = torch.from_numpy(spec.parity_inputs[0]["lr"])
    assert tuple(spec.module(lr).shape) == (1, 3, 4 * lr.shape[2], 4 * lr.shape[3])
    with pytest.raises(GanserveError, match="init_from .*generator differs: features=4 .here 8."):
        train("srgan", {**gan_config, "generator": {"type": "test-tiny-sr", "features": 8}}, steps=1,
              out_dir=tmp_path / "bad", progress=False)


def test_applications_never_import_each_other() -> None:
    """An application module imports networks, losses, data and shared bases, never another application."""
    import ast
    import importlib

    apps = {m for m in (registry.lookup(name)[0].__module__ for name in registry.available())
            if m.startswith("ganserve.training.applications.")}  # the modules that define a built-in application
    assert {"ganserve.training.applications.srgan", "ganserve.training.applications.cyclegan"} <= apps
    for module in apps:
        tree = ast.parse(Path(importlib.import_module(module).__file__).read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        imported |= {f"{node.module}.{a.name}" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                     and node.module for a in node.names}
        imported |= {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
        assert not (imported & apps) - {module}, module


def test_calibration_feeds_are_drawn_once_from_seed_1234_in_order() -> None:
    from ganserve.training.calibration import CALIBRATION_BATCHES, CALIBRATION_SEED, seeded_feeds

    feeds = list(seeded_feeds(lambda gen: {"x": torch.rand(2, generator=gen).numpy()}))
    expected = torch.rand(2 * CALIBRATION_BATCHES, generator=torch.Generator().manual_seed(CALIBRATION_SEED)).numpy()
    expected = expected.reshape(CALIBRATION_BATCHES, 2)
    assert CALIBRATION_SEED == 1234 and [f["x"].tolist() for f in feeds] == expected.tolist()
    first, again = (list(registry.build("srresnet", {"generator": "test-tiny-sr"}).export_spec().calibration())
                    for _ in range(2))
    assert len(first) == CALIBRATION_BATCHES and all((a["lr"] == b["lr"]).all() for a, b in zip(first, again))
