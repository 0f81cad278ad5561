"""`ganserve import`: weight files in the published layouts (made here with random weights, never downloaded) are
recognised with their hyper-parameters, loaded strictly into ganserve's networks, whose output equals the published
architecture's forward pass written out from the state dict (tests/pipeline/foreign_weights.py); the checkpoint
exports, serves through the image API as torch computes it, tiles as it runs whole; bad files end in one line, exit 2,
nothing written."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import foreign_weights as fw
from ganserve.core.files import file_sha256
from ganserve.export.exporter import export_checkpoint, read_card
from ganserve.pipeline.importer import build_import, import_weights
from ganserve.training.networks.layouts import layouts
from ganserve.serving.client import ImageOptions, ImagesClient
from ganserve.serving.server import ServerThread
from ganserve.training.checkpoint import build_from_checkpoint, load_checkpoint
from ganserve.training.applications.sr_eval import held_out_pairs
from local_server import server_config

ROOT = Path(__file__).resolve().parents[2]
torch.set_num_threads(1)


@dataclass
class Case:
    """One weight file: its content, the file name, what the import must read, and the reference forward pass."""

    format: str
    file: str
    content: Callable[[], dict[str, Any]]
    hyper: dict[str, Any]
    reference: Callable[[torch.Tensor], torch.Tensor]  # on the network's own range ([0, 1] SR, [-1, 1] translation)
    input_shape: tuple[int, ...]
    application: str = "srresnet"
    multiple: int = 1
    where: str = "the top level of the file"
    notes: list[str] = field(default_factory=list)

    @property
    def scale(self) -> int:
        return int(self.hyper.get("scale", 1))

    @property
    def tile_safe(self) -> bool:
        return self.application == "srresnet"


RRDB = {"num_feat": 8, "num_block": 2, "num_grow_ch": 4}
CASES = {
    "realesrgan-x4-params_ema": Case(
        "realesrgan", "RealESRGAN_x4plus.pth",
        lambda: {"params_ema": fw.rrdbnet_state(), "params": fw.rrdbnet_state(seed=9)},
        {"scale": 4, **RRDB}, lambda x: fw.rrdbnet_forward(fw.rrdbnet_state(), x, 4), (1, 3, 12, 16),
        where="params_ema"),
    "realesrgan-x2-bare": Case(
        "realesrgan", "RealESRGAN_x2plus.pth", lambda: fw.rrdbnet_state(scale=2),
        {"scale": 2, **RRDB}, lambda x: fw.rrdbnet_forward(fw.rrdbnet_state(scale=2), x, 2), (1, 3, 12, 18),
        multiple=2, notes=["input pixel-unshuffled by 2"]),
    "realesrgan-x4-safetensors": Case(
        "realesrgan", "RealESRGAN_x4plus.safetensors", lambda: fw.rrdbnet_state(seed=7),
        {"scale": 4, **RRDB}, lambda x: fw.rrdbnet_forward(fw.rrdbnet_state(seed=7), x, 4), (1, 3, 10, 14)),
    "esrgan-original": Case(
        "esrgan", "RRDB_ESRGAN_x4.pth", lambda: fw.esrgan_old_keys(fw.rrdbnet_state(seed=3)),
        {"scale": 4, **RRDB}, lambda x: fw.rrdbnet_forward(fw.rrdbnet_state(seed=3), x, 4), (1, 3, 12, 16)),
    "srvgg-compact": Case(
        "srvgg", "realesr-animevideov3.pth", lambda: {"params": fw.srvgg_state()},
        {"scale": 4, "num_feat": 8, "num_conv": 3, "act_type": "prelu"},
        lambda x: fw.srvgg_forward(fw.srvgg_state(), x, 4), (1, 3, 12, 16), where="params"),
    "msrresnet-x4": Case(
        "msrresnet", "MSRResNet_x4.pth", lambda: {"params": fw.msrresnet_state()},
        {"scale": 4, "num_feat": 8, "num_block": 2}, lambda x: fw.msrresnet_forward(fw.msrresnet_state(), x, 4),
        (1, 3, 12, 16), where="params"),
    "edsr-x2": Case(
        "edsr", "EDSR_Mx2.pth", lambda: {"params": fw.edsr_state(scale=2)},
        {"scale": 2, "num_feat": 8, "num_block": 2, "res_scale": 1.0},
        lambda x: fw.edsr_forward(fw.edsr_state(scale=2), x, 2), (1, 3, 12, 16), where="params",
        notes=["res_scale 1"]),
    "cyclegan-resnet-6-instance": Case(
        "cyclegan-resnet", "latest_net_G.pth", lambda: fw.resnet_generator_state(),
        {"ngf": 4, "blocks": 6, "norm": "instance", "in_channels": 3, "out_channels": 3},
        lambda x: fw.resnet_generator_forward(fw.resnet_generator_state(), x, "instance"), (1, 3, 32, 24),
        application="pix2pix", multiple=4),
    "cyclegan-resnet-6-batch": Case(
        "cyclegan-resnet", "latest_net_G.pth", lambda: fw.resnet_generator_state(norm="batch"),
        {"ngf": 4, "blocks": 6, "norm": "batch", "in_channels": 3, "out_channels": 3},
        lambda x: fw.resnet_generator_forward(fw.resnet_generator_state(norm="batch"), x, "batch"), (1, 3, 32, 24),
        application="pix2pix", multiple=4),
    "pix2pix-resnet-9-batch-dropout": Case(
        "cyclegan-resnet", "latest_net_G.pth", lambda: fw.resnet_generator_state(blocks=9, norm="batch", dropout=True),
        {"ngf": 4, "blocks": 9, "norm": "batch", "in_channels": 3, "out_channels": 3},
        lambda x: fw.resnet_generator_forward(fw.resnet_generator_state(blocks=9, norm="batch", dropout=True), x,
                                              "batch", dropout=True),
        (1, 3, 16, 20), application="pix2pix", multiple=4),
    "pix2pix-unet-128-batch": Case(
        "pix2pix-unet", "latest_net_G.pth", lambda: fw.unet_state(depth=7),
        {"depth": 7, "input_side": 128, "ngf": 4, "max_mult": 8, "norm": "batch", "in_channels": 3, "out_channels": 3},
        lambda x: fw.unet_forward(fw.unet_state(depth=7), x, 7, "batch"), (1, 3, 128, 128),
        application="pix2pix", multiple=128, notes=["U-Net depth 7"]),
}


def write_weights(path: Path, content: dict[str, Any]) -> Path:
    """torch.save for .pth, safetensors for .safetensors (a flat dict of tensors)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in content.items()}, str(path))
    else:
        torch.save(content, path)
    return path


def test_every_format_of_the_table_is_tested() -> None:
    assert {c.format for c in CASES.values()} == {f.name for f in layouts()}


@pytest.mark.parametrize("case_id", list(CASES))
def test_import_reads_the_format_and_matches_the_published_forward(case_id: str, tmp_path: Path) -> None:
    case = CASES[case_id]
    src = write_weights(tmp_path / "downloads" / case.file, case.content())
    ckpt, imported, exported = import_weights(src, "imported", out=tmp_path / "out", progress=False)
    facts = imported.facts
    assert exported is None and ckpt == tmp_path / "out" / "checkpoint.pt"
    assert (facts["format"], facts["hyper_parameters"], facts["application"]) == (case.format, case.hyper,
                                                                                   case.application)
    assert facts["weights_from"] == case.where and facts["sha256"] == file_sha256(src) and facts["file"] == case.file
    assert facts["needs"] == {"task": "super_resolution" if case.tile_safe else "translation",
                              "value_range": [0.0, 1.0], "channels": "RGB", "layout": "NCHW", "scale": case.scale,
                              "spatial_multiple": case.multiple, "tile_safe": case.tile_safe}
    for note in case.notes:
        assert any(note in n for n in facts["notes"]), (note, facts["notes"])
    assert (facts["not_from_file"] != []) == (case.application == "pix2pix")  # pix2pix's discriminator is seeded

    # the checkpoint, rebuilt as `ganserve export` rebuilds it, computes what the published architecture computes
    app = build_from_checkpoint(ckpt)
    x = torch.rand(*case.input_shape, generator=torch.Generator().manual_seed(1))
    if case.application == "pix2pix":
        x = x * 2 - 1
    with torch.no_grad():
        got, want = app.generator(x), case.reference(x)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-4), float((got - want).abs().max())
    payload = load_checkpoint(ckpt)
    assert payload["step"] == 0 and payload["optim"] == {}
    assert payload["metrics"]["imported"]["sha256"] == facts["sha256"]
    record = json.loads((tmp_path / "out" / "import.json").read_text())
    assert record["sha256"] == facts["sha256"] and record["hyper_parameters"] == case.hyper

    # ... and exports unchanged: parity, the card says where it came from and what it needs
    version = export_checkpoint(ckpt, tmp_path / "repo", name="imported")
    card = read_card(version)
    assert (card.scale, card.spatial_multiple, card.tile_safe) == (case.scale, case.multiple, case.tile_safe)
    assert card.parity["max_abs_error"] < 1e-4 and card.metrics["quality_key"] in card.metrics
    assert card.training["training_data"].startswith(f"imported: {case.file} ({case.format}") and \
        "no training run here" in card.training["training_data"]
    assert card.training["steps"] == 0 and card.training["metrics"]["imported"]["sha256"] == file_sha256(src)
    assert card.training["metrics"]["imported"]["hyper_parameters"] == case.hyper
    assert card.source["checkpoint_sha256"] == file_sha256(ckpt)


def test_old_pytorch_cyclegan_files_load(tmp_path: Path) -> None:
    """Instance norm saved with (stale) running statistics, and batch norm without num_batches_tracked (PyTorch
    < 0.4.1): both load, and say what was done."""
    stale = fw.resnet_generator_state()
    for key in ("model.2", "model.5", "model.10.conv_block.2"):
        stale[f"{key}.running_mean"], stale[f"{key}.running_var"] = torch.zeros(4), torch.ones(4)
    old_bn = {k: v for k, v in fw.resnet_generator_state(norm="batch").items() if "num_batches_tracked" not in k}
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    for content, norm, note in ((stale, "instance", "6 stale instance-norm statistics keys dropped"),
                                (old_bn, "batch", "num_batches_tracked counters absent from the file, set to 0")):
        imported = build_import(write_weights(tmp_path / f"{norm}.pth", content))
        assert imported.facts["hyper_parameters"]["norm"] == norm
        assert any(note in n for n in imported.facts["notes"]), imported.facts["notes"]
        reference = fw.resnet_generator_state(norm=norm)
        with torch.no_grad():
            assert torch.allclose(imported.app.generator(x), fw.resnet_generator_forward(reference, x, norm), atol=1e-5)


# -- served through the image API --------------------------------------------------------------------------------------
def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _torch_8bit(module: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    """The exported torch module on an 8-bit picture, rounded back to 8 bits as the image API does."""
    x = torch.from_numpy((image.astype(np.float32) / 255.0).transpose(2, 0, 1)[None].copy())
    with torch.no_grad():
        y = module(x)[0].clamp(0, 1).numpy()
    return np.rint(y * 255.0).astype(np.uint8).transpose(1, 2, 0)


def _photo(h: int, w: int) -> np.ndarray:
    hr = held_out_pairs(1)[0][0]  # a held-out photo, HxWx3 float in [0, 1]
    return np.rint(hr[:h, :w] * 255.0).astype(np.uint8)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """An imported Real-ESRGAN-layout RRDBNet x4 and an imported CycleGAN ResnetGenerator, exported and served."""
    root = tmp_path_factory.mktemp("import-served")
    apps = {}
    for name, case_id in (("esrgan-tiny", "realesrgan-x4-params_ema"), ("cyclegan-tiny", "cyclegan-resnet-6-instance")):
        case = CASES[case_id]
        src = write_weights(root / name / case.file, case.content())
        ckpt, _, _ = import_weights(src, name, out=root / "runs" / name, export_repo=root / "repo", progress=False)
        apps[name] = build_from_checkpoint(ckpt).export_spec().module
    config = server_config(root / "repo")
    config.runtime.precision = "fp32"  # the fp32 graph whatever the machine: the comparison is with torch fp32
    server = ServerThread(config)
    server.start()
    yield apps, server
    server.stop()


@pytest.mark.parametrize("name, size", [("esrgan-tiny", (60, 84)), ("cyclegan-tiny", (64, 96))])
def test_served_equals_torch_on_the_same_8bit_input(served, name: str, size: tuple[int, int]) -> None:
    apps, server = served
    image = _photo(*size)
    with ImagesClient(f"127.0.0.1:{server.port}", timeout=120) as client:
        reply = client.transform(name, _png(image))
    got, want = _decode(reply.image), _torch_8bit(apps[name], image)
    assert got.shape == want.shape and reply.tiles == 1
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def test_tiled_equals_untiled_for_an_imported_rrdbnet(served) -> None:
    """Tiles whose overlap's quarter covers the tiny RRDBNet's receptive radius (about 34 LR pixels) blend to the
    whole-image output: >= 50 dB PSNR between the two 8-bit replies."""
    _, server = served
    image = _photo(200, 420)
    with ImagesClient(f"127.0.0.1:{server.port}", timeout=300) as client:
        whole = client.transform("esrgan-tiny", _png(image), options=ImageOptions(tile_size=0))
        tiled = client.transform("esrgan-tiny", _png(image), options=ImageOptions(tile_size=288, tile_overlap=140))
    assert whole.tiles == 1 and tiled.tiles > 1
    a, b = _decode(whole.image).astype(np.float64), _decode(tiled.image).astype(np.float64)
    assert a.shape == b.shape == (800, 1680, 3) and a.std() > 20  # a picture, not a flat field
    mse = float(np.mean((a - b) ** 2))
    assert mse == 0.0 or 10 * np.log10(255.0**2 / mse) >= 50.0, mse
    assert np.abs(a - b).max() <= 1  # equal up to rounding: the overlap covers the receptive field


# -- the command line: success, and every bad input one line, exit 2, nothing written ----------------------------------
def ganserve_import(*args: str | Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "ganserve.pipeline.cli", "import", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_imports_and_exports(tmp_path: Path) -> None:
    src = write_weights(tmp_path / "realesr-animevideov3.pth", {"params": fw.srvgg_state()})
    out, repo = tmp_path / "runs" / "anime", tmp_path / "repo"
    done = ganserve_import(src, "--name", "anime", "--out", out, "--export", repo, "--quiet")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[0].startswith(f"{out / 'checkpoint.pt'}  (srvgg: scale=4, num_feat=8, num_conv=3")
    assert done.stdout.splitlines()[1] == str(repo / "anime" / "1")
    card = read_card(repo / "anime" / "1")
    assert card.training["metrics"]["imported"]["file"] == "realesr-animevideov3.pth" and card.scale == 4
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "import.json"]
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["anime"]  # no staging folder left behind

    # an existing --out is kept unless --overwrite
    again = ganserve_import(src, "--name", "anime", "--out", out)
    assert again.returncode == 2 and again.stderr.count("\n") == 1
    assert "already exists; pass --overwrite" in again.stderr
    before = file_sha256(out / "checkpoint.pt")
    replaced = ganserve_import(src, "--name", "anime", "--out", out, "--overwrite", "--quiet")
    assert replaced.returncode == 0, replaced.stderr[-2000:]
    assert load_checkpoint(out / "checkpoint.pt")["metrics"]["imported"]["sha256"] == file_sha256(src)
    assert before  # the first checkpoint was there until the new one replaced it

    # shipped into a user's models folder, its record says it was imported; the demo then runs it like any entry
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}

    def cli(*args: str | Path) -> None:
        done = subprocess.run([sys.executable, "-m", "ganserve.pipeline.cli", *map(str, args)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]

    cli("ship", out / "checkpoint.pt", "--name", "anime", "--models-dir", tmp_path / "models")
    record = json.loads((tmp_path / "models" / "anime" / "training_record.json").read_text())
    assert record["imported"]["sha256"] == file_sha256(src) and "not trained here" in record["reproduce"]
    cli("demo", "--shipped", tmp_path / "models", "--models", "anime", "--repo", tmp_path / "demo-repo",
        "--out", tmp_path / "demo", "--examples", "1", "--bench-requests", "2")
    (row,) = json.loads((tmp_path / "demo" / "summary.json").read_text())["models"]["anime"]["requests"]
    assert row["output_size"] == [4 * n for n in row["input_size"]] and "baseline_psnr_y" in row


class WritesAFile:
    """A pickle whose loading would create ``path`` (``open(path, "w")``): what a malicious .pth does."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return open, (self.path, "w")


def _malicious_zip(tmp: Path) -> Path:
    path = tmp / "evil.pth"
    torch.save({"params_ema": fw.rrdbnet_state(), "hook": WritesAFile(tmp / "pwned")}, path)
    return path


def _malicious_legacy(tmp: Path) -> Path:
    path = tmp / "evil_legacy.pth"
    with open(path, "wb") as fh:
        pickle.dump({"conv_first.weight": WritesAFile(tmp / "pwned")}, fh, protocol=2)
    return path


def _unknown(tmp: Path) -> Path:
    state = fw.rrdbnet_state()
    state["conv_up3.weight"], state["conv_up3.bias"] = state.pop("conv_up2.weight"), state.pop("conv_up2.bias")
    return write_weights(tmp / "mystery.pth", state)


def _truncated(name: str, content: dict[str, Any]) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        path = write_weights(tmp / name, content)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return path
    return make


def _wrong_shape(tmp: Path) -> Path:
    state = fw.rrdbnet_state()
    state["body.1.rdb2.conv3.weight"] = torch.zeros(4, 15, 3, 3)
    return write_weights(tmp / "RealESRGAN_x4plus.pth", state)


def _srvgg(tmp: Path) -> Path:
    return write_weights(tmp / "realesr-general-x4v3.pth", {"params": fw.srvgg_state()})


BAD = {
    "malicious pickle (zip)": (_malicious_zip, [], "refused: the pickle holds more than tensors (it would call"),
    "malicious pickle (legacy)": (_malicious_legacy, [], "evil_legacy.pth: refused: the pickle holds more than tensors "
                                  "(it would call io.open); only weights are read (torch.load weights_only=True), "
                                  "nothing in the file ran"),
    "unknown layout": (_unknown, [], "mystery.pth: unknown layout (72 tensors); nearest "
                       "known format: realesrgan (Real-ESRGAN / BasicSR RRDBNet (RealESRGAN_x4plus, _x2plus, "
                       "_anime_6B, BasicSR ESRGAN)): missing conv_up2.weight; unexpected conv_up3.weight, "
                       "conv_up3.bias"),
    "truncated .pth": (_truncated("t.pth", fw.rrdbnet_state()), [],
                       "t.pth: truncated or corrupt .pth file (a zip archive (torch.save's format) whose end is "
                       "missing)"),
    "truncated .safetensors": (_truncated("t.safetensors", fw.rrdbnet_state()), [],
                               "t.safetensors: truncated or corrupt safetensors file"),
    "wrong shape": (_wrong_shape, [], "body.1.rdb2.conv3.weight has shape [4, 15, 3, 3] in the file; rrdbnet(scale=4, "
                    "num_feat=8, num_block=2, num_grow_ch=4) needs [4, 16, 3, 3]"),
    "contradicting --format": (_srvgg, ["--format", "realesrgan"],
                               "--format realesrgan contradicts the keys (missing conv_first.weight, "
                               "body.0.rdb1.conv1.weight, conv_body.weight, conv_up1.weight (+3 more); unexpected "
                               "body.0.weight, body.0.bias, body.1.weight, body.2.weight (+10 more)); they look like "
                               "srvgg"),
    "not a state dict": (lambda tmp: write_weights(tmp / "list.pth", [torch.zeros(1)]), [],  # type: ignore[arg-type]
                         "holds list, not a state dict of tensors"),
    "bad name": (_srvgg, ["--name", "no/slashes"], "invalid model name 'no/slashes'"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case: str, tmp_path: Path) -> None:
    make, extra, message = BAD[case]
    src = make(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    out = tmp_path / "runs" / "import" / "x"
    name = [] if "--name" in extra else ["--name", "x"]
    done = ganserve_import(src, *name, *extra, "--out", out, "--export", tmp_path / "repo")
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == "" and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("ganserve import: error: ") and message in done.stderr, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no runs/, no repo/, no file the pickle wanted


def test_the_malicious_pickle_would_really_write_its_file(tmp_path: Path) -> None:
    """The payload used above is live: plain pickle.loads runs it (so its absence after the import means something)."""
    target = tmp_path / "written"
    pickle.loads(pickle.dumps(WritesAFile(target))).close()
    assert target.exists()
