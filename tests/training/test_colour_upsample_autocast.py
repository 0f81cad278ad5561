"""The grey -> colour pix2pix task, the colourfulness and grid statistics, resize-convolution upsampling, bf16
autocast in training, and shipped checkpoints without training-only networks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ganserve.core.errors import CheckpointError, GanserveError
from ganserve.training import registry
from ganserve.training.checkpoint import build_from_checkpoint, load_checkpoint, save_checkpoint
from ganserve.training.data.paired import builtin_train_pairs, grey_map, held_out_pairs
from ganserve.training.applications import translation_eval as te
from ganserve.training.networks.translation import ResnetGenerator, Translator, to_grey, with_luma
from ganserve.training.trainer import autocast_dtype, train

P2P_COLOUR = {"task": "colour", "depth": 5, "ngf": 4, "max_mult": 2, "ndf": 4, "d_max_mult": 2, "crop": 32,
              "batch_size": 2, "log_every": 1, "eval_every": 0, "sample_every": 0, "ckpt_every": 0}


def test_grey_map_is_the_rec601_luma_rounded_and_grey_maps_to_itself() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    grey = grey_map(img)
    r, g, b = (img[..., i].astype(np.float64) for i in range(3))
    expected = np.clip(np.rint(0.299 * r + 0.587 * g + 0.114 * b), 0, 255).astype(np.uint8)
    for c in range(3):
        assert np.array_equal(grey[..., c], expected)
    assert np.array_equal(grey_map(grey), grey)
    # the network-side conversion agrees with the data's (before rounding)
    t = torch.from_numpy(img.astype(np.float32).transpose(2, 0, 1)[None])
    assert torch.allclose(to_grey(t)[0, 1], torch.from_numpy((0.299 * r + 0.587 * g + 0.114 * b).astype(np.float32)),
                          atol=1e-3)


def test_the_colour_task_pairs_grey_inputs_with_the_photos() -> None:
    for a, b in builtin_train_pairs("colour")[:2] + held_out_pairs("colour"):
        assert a.shape == b.shape and np.array_equal(a, grey_map(b))
    with pytest.raises(GanserveError, match="task must be one of colour, edges"):
        builtin_train_pairs("sketch")


def test_colourfulness_is_zero_for_grey_and_hasler_suesstrunk_for_a_flat_colour() -> None:
    assert te.colourfulness(np.full((4, 4, 3), 0.4)) == 0.0
    red = np.zeros((4, 4, 3))
    red[..., 0] = 1.0  # rg = 255, yb = 127.5 everywhere: no spread, only the mean term
    assert te.colourfulness(red) == pytest.approx(0.3 * np.hypot(255.0, 127.5))
    halves = np.zeros((2, 2, 3))
    halves[0, :, 0] = 1.0  # half the pixels red, half black: std of rg = 127.5, of yb = 63.75
    assert te.colourfulness(halves) == pytest.approx(np.hypot(127.5, 63.75) + 0.3 * np.hypot(127.5, 63.75))


def test_grid_strength_sees_a_fixed_checkerboard_and_not_a_constant_or_unpatterned_error() -> None:
    rng = np.random.default_rng(1)
    truth = rng.random((64, 64, 3))
    assert te.grid_strength(truth + 0.1, truth) == pytest.approx(0.0, abs=1e-9)
    board = np.indices((64, 64)).sum(axis=0) % 2 * 2.0 - 1.0  # +-1 on a period-2 checkerboard
    amplitude = 3.0 / 255.0
    assert te.grid_strength(truth + amplitude * board[..., None], truth) == pytest.approx(3.0, rel=1e-6)
    noisy = truth + rng.normal(0, 3.0 / 255.0, truth.shape)  # as strong, but not tied to the grid
    assert te.grid_strength(noisy, truth) < 0.5


@pytest.mark.parametrize("upsample", ["transpose", "resize"])
def test_resize_upsampling_keeps_a_flat_input_flat_where_the_transposed_convolution_paints_a_grid(upsample) -> None:
    torch.manual_seed(0)
    net = ResnetGenerator(ngf=4, blocks=1, norm="none", upsample=upsample).eval()
    with torch.no_grad():
        out = net(torch.full((1, 3, 128, 128), 0.3))
    # the centre, beyond the reach of the zero padding of the stride-2 convolutions
    inner = out[0, :, 48:80, 48:80].permute(1, 2, 0).numpy().astype(np.float64)
    strength = te.grid_strength(inner, np.zeros_like(inner))
    if upsample == "resize":
        assert strength < 1e-4 and "resize-convolution" in net.describe()
    else:
        assert strength > 0.5  # grey levels
    assert out.shape == (1, 3, 128, 128)


def test_an_unknown_upsampling_is_refused() -> None:
    with pytest.raises(GanserveError, match="upsample must be one of transpose, resize"):
        ResnetGenerator(ngf=4, blocks=1, upsample="bilinear")


def test_the_colouriser_sees_luma_only_so_a_colour_photo_and_its_grey_version_give_one_answer(tmp_path) -> None:
    path = train("pix2pix", P2P_COLOUR, steps=2, out_dir=tmp_path, progress=False)
    app = build_from_checkpoint(path)
    rng = np.random.default_rng(2)
    photo = rng.integers(0, 256, (32, 64, 3), dtype=np.uint8)
    module = app.export_spec().module
    colour = torch.from_numpy(te.to_batch(photo))
    grey = torch.from_numpy(te.to_batch(grey_map(photo)))
    with torch.no_grad():
        a, b = module(colour), module(grey)
    assert torch.allclose(a, b, atol=2 / 255)  # the grey file is rounded to 8 bits, the conversion is not
    figures = app.evaluate()
    assert figures["identity_psnr"] < 20 and 0 <= figures["colourfulness"] and figures["truth_colourfulness"] > 20
    assert "grey -> colour" in load_checkpoint(path)["metrics"]["held_out"]
    edges = registry.build("pix2pix", {**P2P_COLOUR, "task": "edges"})
    assert not Translator(edges.generator, edges.grey_input).grey_input


def test_with_luma_keeps_the_given_light_exactly_and_the_colour_where_the_gamut_allows() -> None:
    rng = torch.Generator().manual_seed(0)
    rgb = torch.rand(2, 3, 16, 16, generator=rng)
    grey = to_grey(torch.rand(2, 3, 16, 16, generator=rng))
    out = with_luma(rgb, grey)
    assert float((to_grey(out) - grey).abs().max()) < 1e-6  # the light is the given one
    assert float(out.min()) >= -1e-6 and float(out.max()) <= 1 + 1e-6  # inside the RGB cube, no clipping needed
    offset = lambda x: x - to_grey(x)  # noqa: E731  (the colour: Cb and Cr, up to a per-pixel scale)
    same = (offset(out) - offset(rgb)).abs().amax(dim=1) < 1e-5
    # where rgb's colour fits on the new light it is kept as it is; elsewhere it is scaled down, never turned
    assert bool(same.any()) and bool(((offset(out) * offset(rgb)).sum(dim=1) >= -1e-6).all())
    mid, soft = torch.full_like(grey, 0.5), 0.3 + 0.4 * rgb  # soft's colour offsets are under 0.4: they fit mid-grey
    assert torch.allclose(with_luma(soft, mid), mid + offset(soft), atol=1e-6)
    assert float(with_luma(rgb, torch.ones_like(grey)).sub(1).abs().max()) < 1e-6  # white leaves no room: white


@pytest.mark.parametrize("chroma_sigma", [0.0, 2.0])
def test_keep_luma_colouriser_trains_exports_and_keeps_the_light_through_onnx(tmp_path, chroma_sigma) -> None:
    """keep_luma in training, the exported ONNX graph and the held-out figures: the served output's 8-bit luma is
    the input's within rounding (half a grey level), with or without the colour low-pass (chroma_sigma)."""
    import onnxruntime as ort

    from ganserve.export.exporter import export_checkpoint

    path = train("pix2pix", {**P2P_COLOUR, "keep_luma": True, "chroma_sigma": chroma_sigma}, steps=2,
                 out_dir=tmp_path / "run", progress=False)
    figures = build_from_checkpoint(path).evaluate()
    assert figures["luma_levels_max"] <= 0.5 + 1e-6 and figures["luma_psnr"] > 50
    version = export_checkpoint(path, tmp_path / "repo", name="colour")
    session = ort.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"])
    photo = np.random.default_rng(3).integers(0, 256, (32, 64, 3), dtype=np.uint8)
    (out,) = session.run(None, {session.get_inputs()[0].name: te.to_batch(photo)})
    served = np.round(te.to_hwc(out) * 255)
    assert np.abs(te.luma(served) - te.luma(photo.astype(np.float64))).max() <= 0.5 + 1e-6
    with pytest.raises(GanserveError, match="keep_luma applies to the built-in colour task only"):
        registry.build("pix2pix", {**P2P_COLOUR, "task": "edges", "keep_luma": True})
    with pytest.raises(GanserveError, match="chroma_sigma must be >= 0 and needs keep_luma"):
        registry.build("pix2pix", {**P2P_COLOUR, "chroma_sigma": 2.0})
    if chroma_sigma:  # the low-pass changes the colour, never the light: the offset it blurs has zero luma
        app = build_from_checkpoint(path)
        x = torch.from_numpy(te.to_batch(photo))
        sharp, soft = (Translator(app.generator.eval(), True, True, s)(x) for s in (0.0, chroma_sigma))
        assert float((sharp - soft).abs().max()) > 1e-3
        assert float((to_grey(sharp) - to_grey(soft)).abs().max()) < 1e-5


def test_autocast_auto_follows_the_cpu_and_bad_values_are_refused() -> None:
    from ganserve.core.machine import cpu_info

    cpu = torch.device("cpu")
    assert autocast_dtype("off", cpu) is None and autocast_dtype("bf16", cpu) is torch.bfloat16
    assert autocast_dtype("auto", cpu) is (torch.bfloat16 if cpu_info()["bf16_hardware"] else None)
    with pytest.raises(GanserveError, match="autocast must be one of off, bf16, auto"):
        autocast_dtype("fp8", cpu)


def test_bf16_autocast_runs_the_forward_passes_in_bf16_and_keeps_fp32_weights(tmp_path, tiny) -> None:
    seen: list[torch.dtype] = []
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda mod, _inp, out: seen.append(out.dtype) if isinstance(mod, torch.nn.Conv2d) else None)
    try:
        path = train("srresnet", {**tiny, "autocast": "bf16"}, steps=2, out_dir=tmp_path / "bf16", progress=False)
        bf16_seen = list(seen)
        seen.clear()
        fp32 = train("srresnet", tiny, steps=2, out_dir=tmp_path / "fp32", progress=False)
    finally:
        handle.remove()
    assert torch.bfloat16 in bf16_seen and torch.bfloat16 not in seen  # training convs; evaluation stays fp32
    payload = load_checkpoint(path)
    assert payload["metrics"]["autocast"] == "bf16" and load_checkpoint(fp32)["metrics"]["autocast"] == "off"
    assert all(v.dtype == torch.float32 for v in payload["state"].values() if v.is_floating_point())
    rows = [json.loads(line) for line in (tmp_path / "bf16" / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss_pix"]) for r in rows if r["kind"] == "train")


def test_a_checkpoint_without_its_discriminator_loads_for_inference_but_not_without_its_generator(tmp_path) -> None:
    path = train("pix2pix", P2P_COLOUR, steps=1, out_dir=tmp_path, progress=False)
    payload = load_checkpoint(path)
    app = build_from_checkpoint(path)
    lean = app.inference_state(payload["state"])
    assert lean and not any(k.startswith("discriminator.") for k in lean)
    assert set(payload["state"]) - set(lean) == {k for k in payload["state"] if k.startswith("discriminator.")}
    save_checkpoint(tmp_path / "lean.pt", {**payload, "state": lean, "removed": ["discriminator"]})
    again = build_from_checkpoint(tmp_path / "lean.pt")
    for k, v in lean.items():
        assert torch.equal(again.state_dict()[k], v), k
    assert again.evaluate()["psnr"] == pytest.approx(app.evaluate()["psnr"])
    # leaving weights out without saying so, or leaving out a network inference needs, is refused
    save_checkpoint(tmp_path / "silent.pt", {**payload, "state": lean})
    with pytest.raises(CheckpointError, match="weights do not fit"):
        build_from_checkpoint(tmp_path / "silent.pt")
    no_gen = {k: v for k, v in payload["state"].items() if not k.startswith("generator.")}
    save_checkpoint(tmp_path / "nogen.pt", {**payload, "state": no_gen, "removed": ["generator"]})
    with pytest.raises(CheckpointError, match="needs for inference"):
        build_from_checkpoint(tmp_path / "nogen.pt")
