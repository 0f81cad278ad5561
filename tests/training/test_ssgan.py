"""Semi-supervised GAN classifier: hand-checked losses, data splits and IDX files, tiny runs, resume, CLI."""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from ganserve.pipeline.cli import main
from ganserve.core.errors import GanserveError
from ganserve.training import registry
from ganserve.training.checkpoint import build_from_checkpoint, load_checkpoint
from ganserve.training.data.digits import (
    labeled_subset, load_mnist_dir, load_sklearn_digits, read_idx, semi_supervised_split, stratified_split,
)
from ganserve.training.applications.ssgan_eval import accuracy_report, confusion_matrix
from ganserve.training.networks.ssgan import parse_widths
from ganserve.training.objectives.ssgan import feature_matching_loss, log_d_real, supervised_loss, unsupervised_loss
from ganserve.training.trainer import train

# A small network that still learns the digits in ~150 steps (tens of ms per step on one thread).
TINY = {"d_widths": "64,32", "g_widths": "64", "z_dim": 16, "batch_size": 32, "init_batch": 64, "lr": 3e-3,
        "log_every": 10, "eval_every": 0, "sample_every": 0, "ckpt_every": 0}


# -- losses ----------------------------------------------------------------------------------------------------
def test_unsupervised_loss_at_zero_logits() -> None:
    # Z = 10 exp(0) = 10, D = 10/11: -log D = log 1.1, -log(1 - D) = log 11
    zeros = torch.zeros(3, 10)
    assert float(unsupervised_loss(zeros, zeros)) == pytest.approx(0.5 * (math.log(1.1) + math.log(11.0)), rel=1e-6)


def test_unsupervised_loss_hand_checked() -> None:
    real = torch.tensor([[math.log(3.0), 0.0]])  # Z = 4, D = 0.8, -log D = log 1.25
    fake = torch.tensor([[0.0, math.log(3.0)]])  # Z = 4, -log(1 - D) = log 5
    assert float(unsupervised_loss(real, fake)) == pytest.approx(0.5 * (math.log(1.25) + math.log(5.0)), rel=1e-6)
    # batch means: a second real row with Z = 1 (D = 0.5) adds log 2 to the mean of -log D
    real2 = torch.tensor([[math.log(3.0), 0.0], [-30.0, 0.0]])
    expected = 0.5 * ((math.log(1.25) + math.log(2.0)) / 2 + math.log(5.0))
    assert float(unsupervised_loss(real2, fake)) == pytest.approx(expected, rel=1e-5)


def test_log_d_is_stable_at_extreme_logits() -> None:
    big, small = torch.tensor([[1000.0, 0.0]]), torch.tensor([[-1000.0, -1000.0]])
    assert float(log_d_real(big)) == pytest.approx(0.0, abs=1e-6)
    assert float(log_d_real(small)) == pytest.approx(-1000.0 + math.log(2.0), rel=1e-6)  # log Z - log(1 + Z)
    loss = unsupervised_loss(big, small)  # a perfect discriminator: both terms ~ 0
    assert math.isfinite(float(loss)) and float(loss) == pytest.approx(0.0, abs=1e-6)


def test_supervised_and_feature_matching_losses() -> None:
    logits = torch.tensor([[0.0, math.log(3.0)], [math.log(3.0), 0.0]])
    assert float(supervised_loss(logits, torch.tensor([1, 1]))) == pytest.approx(
        (-math.log(0.75) - math.log(0.25)) / 2, rel=1e-6)
    real = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # mean [2, 3]
    fake = torch.tensor([[0.0, 0.0], [2.0, 2.0]])  # mean [1, 1]
    assert float(feature_matching_loss(real, fake)) == pytest.approx((1.0 + 4.0) / 2)


def test_confusion_matrix_and_report() -> None:
    labels = np.array([0, 0, 1, 2, 2, 2])
    predicted = np.array([0, 1, 1, 2, 2, 0])
    assert confusion_matrix(predicted, labels, 3).tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    report = accuracy_report(np.eye(3)[predicted], labels, 3)
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["mean_class_recall"] == pytest.approx((0.5 + 1.0 + 2 / 3) / 3)
    assert report["chance_accuracy"] == pytest.approx(0.5)


# -- data ------------------------------------------------------------------------------------------------------
def test_stratified_split_is_stratified_and_seeded() -> None:
    labels = np.repeat(np.arange(4), [10, 20, 30, 40])
    kept, held = stratified_split(labels, 0.3, seed=5)
    assert np.bincount(labels[held]).tolist() == [3, 6, 9, 12]
    assert len(np.intersect1d(kept, held)) == 0 and len(kept) + len(held) == 100
    again_kept, again_held = stratified_split(labels, 0.3, seed=5)
    assert np.array_equal(held, again_held) and np.array_equal(kept, again_kept)
    assert not np.array_equal(held, stratified_split(labels, 0.3, seed=6)[1])


def test_labeled_subset_is_stratified_and_reproducible() -> None:
    labels = load_sklearn_digits().labels
    chosen = labeled_subset(labels, 10, seed=3)
    assert np.bincount(labels[chosen]).tolist() == [10] * 10 and len(np.unique(chosen)) == 100
    assert np.array_equal(chosen, labeled_subset(labels, 10, seed=3))
    assert not np.array_equal(chosen, labeled_subset(labels, 10, seed=4))
    with pytest.raises(GanserveError, match="fewer than labels_per_class"):
        labeled_subset(labels, 500, seed=0)


def test_semi_supervised_split_on_digits() -> None:
    split = semi_supervised_split("", per_class=10, seed=1)
    assert len(split.held_out.labels) == 539 and split.held_out_name == "test"
    assert len(split.labeled.labels) == 100 and len(split.unlabeled.labels) == 1797 - 539 - 100
    assert np.bincount(split.labeled.labels).tolist() == [10] * 10
    other = semi_supervised_split("", per_class=20, seed=2)
    assert np.array_equal(other.held_out.images, split.held_out.images)  # the test split is fixed
    val = semi_supervised_split("", per_class=10, seed=1, holdout="validation")
    assert val.held_out_name == "validation" and 245 <= len(val.held_out.labels) <= 258  # ~20% of 1258
    assert len(val.held_out.labels) + len(val.labeled.labels) + len(val.unlabeled.labels) == 1258  # no test image
    assert split.labeled.shape == (1, 8, 8)
    assert 0.0 <= split.labeled.images.min() and split.labeled.images.max() <= 1.0


def _write_idx(path: Path, array: np.ndarray, code: int = 0x08) -> None:
    raw = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)


def _mnist_dir(root: Path, per_class: int = 8, classes: int = 3, size: int = 6, test: bool = True) -> Path:
    """Tiny MNIST-format files: class k is a bright horizontal bar on row k*2 (easy to learn)."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(classes, dtype=np.uint8), per_class)
    images = rng.integers(0, 40, (len(labels), size, size)).astype(np.uint8)
    for i, k in enumerate(labels):
        images[i, 2 * k] = 250
    root.mkdir(parents=True, exist_ok=True)
    _write_idx(root / "train-images-idx3-ubyte.gz", images)
    _write_idx(root / "train-labels-idx1-ubyte", labels)
    if test:
        _write_idx(root / "t10k-images-idx3-ubyte", images[::2])
        _write_idx(root / "t10k-labels-idx1-ubyte", labels[::2])
    return root


def test_idx_reader_round_trip(tmp_path: Path) -> None:
    data = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a-idx3-ubyte", data)
    _write_idx(tmp_path / "a.gz", data)
    assert np.array_equal(read_idx(tmp_path / "a-idx3-ubyte"), data)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), data)
    floats = np.array([1.5, -2.0], dtype=">f4")
    _write_idx(tmp_path / "f", floats, code=0x0D)
    assert read_idx(tmp_path / "f").tolist() == [1.5, -2.0]


def test_idx_reader_refuses_malformed(tmp_path: Path) -> None:
    (tmp_path / "bad").write_bytes(b"\x08\x03\x00\x01junk")
    with pytest.raises(GanserveError, match="bad magic"):
        read_idx(tmp_path / "bad")
    raw = bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"\x01\x02"
    (tmp_path / "short").write_bytes(raw)
    with pytest.raises(GanserveError, match="needs 10 data bytes, file has 2"):
        read_idx(tmp_path / "short")
    (tmp_path / "x.gz").write_bytes(b"not gzip")
    with pytest.raises(GanserveError, match="unreadable IDX"):
        read_idx(tmp_path / "x.gz")


def test_mnist_dir_loader_and_split(tmp_path: Path) -> None:
    folder = _mnist_dir(tmp_path / "mnist")
    train_set, test_set = load_mnist_dir(folder)
    assert train_set.images.shape == (24, 1, 6, 6) and test_set is not None and len(test_set.labels) == 12
    assert train_set.images[0, 0, 0].tolist() == pytest.approx([250 / 255] * 6)
    split = semi_supervised_split(str(folder), per_class=2, seed=0)
    assert (split.classes, len(split.labeled.labels), len(split.unlabeled.labels), len(split.held_out.labels)) == (3, 6, 18, 12)
    no_test = _mnist_dir(tmp_path / "no_test", test=False)
    split = semi_supervised_split(str(no_test), per_class=2, seed=0, test_fraction=0.25)
    assert len(split.held_out.labels) == 6 and np.bincount(split.held_out.labels).tolist() == [2, 2, 2]
    with pytest.raises(GanserveError, match="needs train-images-idx3-ubyte"):
        load_mnist_dir(tmp_path)


# -- config and application --------------------------------------------------------------------------------------
def test_config_errors() -> None:
    assert parse_widths("500, 250", "d_widths") == [500, 250]
    with pytest.raises(GanserveError, match="discriminator.widths='a'"):
        registry.build("ssgan", {"d_widths": "a,b"})
    with pytest.raises(GanserveError, match="input_noise must be >= 0"):
        registry.build("ssgan", {"discriminator": {"input_noise": -0.1}})
    with pytest.raises(GanserveError, match="holdout"):
        semi_supervised_split("", 10, 0, holdout="train")
    with pytest.raises(GanserveError, match="unknown config key"):
        registry.build("ssgan", {"labels": 3})


def test_baseline_has_no_generator() -> None:
    app = registry.build("ssgan", {**TINY, "gan": False})
    assert app.generator is None and set(app.build_optimizers()) == {"d"}
    assert not any(k.startswith("generator.") for k in app.state_dict())


def test_tiny_semi_supervised_run_beats_chance(tmp_path: Path) -> None:
    ckpt = train("ssgan", {**TINY, "labels_per_class": 5, "seed": 1}, steps=150, out_dir=tmp_path, progress=False)
    payload = load_checkpoint(ckpt)
    ev = payload["metrics"]["eval"]
    assert ev["chance_accuracy"] < 0.12 and ev["accuracy"] > 0.6, ev
    facts = payload["metrics"]
    assert facts["data"]["labeled"] == 50 and facts["data"]["held_out"] == "test"
    matrix = np.array(facts["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == 539
    assert np.trace(matrix) / matrix.sum() == pytest.approx(ev["accuracy"])
    app = build_from_checkpoint(ckpt)
    assert app.evaluate()["accuracy"] == pytest.approx(ev["accuracy"])
    grid = app.sample_grid()
    assert grid.shape == (64, 320, 3) and grid.dtype == np.uint8


def test_resume_is_exact(tmp_path: Path) -> None:
    config = {**TINY, "labels_per_class": 3, "lr_schedule": "constant"}  # cosine would span 3 steps, then 6
    full = train("ssgan", config, steps=6, out_dir=tmp_path / "full", progress=False)
    train("ssgan", config, steps=3, out_dir=tmp_path / "half", progress=False)
    resumed = train("ssgan", config, steps=6, out_dir=tmp_path / "half", resume=True, progress=False)
    a, b = load_checkpoint(full)["state"], load_checkpoint(resumed)["state"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_train_on_idx_files_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = _mnist_dir(tmp_path / "mnist")
    sets = [f"{k}={v}" for k, v in TINY.items()]
    args = ["train", "ssgan", "--set", "labels_per_class=2", "--steps", "5", "--data-dir", str(folder),
            "--out", str(tmp_path / "run"), "--no-progress"]
    for item in sets:
        args += ["--set", item]
    assert main(args) == 0
    assert capsys.readouterr().out.strip().endswith("checkpoint.pt")
    payload = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert payload["step"] == 5 and payload["metrics"]["data"]["image_shape"] == [1, 6, 6]
    assert payload["state"]["discriminator.hidden.0.v"].shape == (64, 36)
    rc = main(["train", "ssgan", "--set", "labels_per_class=50", "--steps", "1", "--data-dir", str(folder),
               "--out", str(tmp_path / "bad")])
    assert rc == 2 and "fewer than labels_per_class=50" in capsys.readouterr().err


def test_recipe_files_resolve() -> None:
    from ganserve.training.config import load_config_file
    from ganserve.training.registry import merge_config

    files = sorted(Path(__file__).resolve().parents[2].glob("training/configs/ssgan*.yaml"))
    assert files
    for path in files:
        config = merge_config("ssgan", load_config_file(path))
        assert config.labels_per_class >= 1 and parse_widths(config.discriminator["widths"], "widths")


def test_conv_classifier_weight_norm_init_and_moving_average(tmp_path: Path) -> None:
    from ganserve.training.networks.ssgan import ConvDiscriminator, WNConv2d

    torch.manual_seed(0)
    x = torch.rand(64, 4, 8, 8)
    conv = WNConv2d(4, 6, stride=2)
    conv.init_from(x)
    out = conv(x).transpose(0, 1).flatten(1)  # data-dependent init: each channel has mean 0 and std 1 on x
    assert torch.allclose(out.mean(dim=1), torch.zeros(6), atol=1e-5)
    assert torch.allclose(out.std(dim=1), torch.ones(6), atol=1e-4)
    d = ConvDiscriminator(1, [8, 16], 10, input_noise=0.3, dropout=0.5)
    logits, features = d(torch.rand(5, 1, 8, 8))
    assert logits.shape == (5, 10) and features.shape == (5, 16)
    with pytest.raises(GanserveError, match="d_arch"):
        registry.build("ssgan", {"d_arch": "rnn"})
    with pytest.raises(GanserveError, match="ema_decay"):
        registry.build("ssgan", {"ema_decay": 1.0})

    config = {**TINY, "d_arch": "conv", "d_widths": "8,16", "ema_decay": 0.9, "labels_per_class": 3}
    ckpt = train("ssgan", config, steps=4, out_dir=tmp_path, progress=False)
    app = build_from_checkpoint(ckpt)
    assert app.ema is not None and any(k.startswith("ema.") for k in load_checkpoint(ckpt)["state"])
    # the average trails the trained weights, and it is what gets evaluated and exported
    assert not torch.equal(app.ema.head.v, app.discriminator.head.v)
    assert app.classifier() is app.ema
    assert app.export_spec().module.discriminator.head.v.data_ptr() != app.discriminator.head.v.data_ptr()
    held = app.data_split().held_out.images[:4]
    with torch.no_grad():
        direct = torch.softmax(app.ema.eval()(torch.from_numpy(held))[0], dim=1).numpy()
    assert np.allclose(app.predict(held), direct, atol=1e-6)


def test_entropy_loss_hand_checked() -> None:
    from ganserve.training.objectives.ssgan import entropy_loss

    uniform = torch.zeros(2, 4)  # p = 1/4 each: entropy log 4
    assert float(entropy_loss(uniform)) == pytest.approx(math.log(4.0), rel=1e-6)
    half = torch.tensor([[0.0, 0.0, -1e4]])  # p = (1/2, 1/2, 0): entropy log 2
    assert float(entropy_loss(half)) == pytest.approx(math.log(2.0), rel=1e-6)
    assert float(entropy_loss(torch.tensor([[1e4, 0.0]]))) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(GanserveError, match="entropy_weight"):
        registry.build("ssgan", {"entropy_weight": -1.0})


def test_random_shift_moves_each_image_within_bounds_and_is_seeded() -> None:
    from ganserve.training.data.augment import random_shift

    x = torch.arange(1.0, 17.0).view(1, 1, 4, 4).repeat(32, 1, 1, 1)
    a = random_shift(x, 1, torch.Generator().manual_seed(3))
    b = random_shift(x, 1, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == x.shape
    for img in a[:, 0]:  # each is the original moved by (dy, dx) in [-1, 1]^2 with zeros shifted in
        found = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                 if torch.equal(img, shifted(x[0, 0], dy, dx))]
        assert len(found) == 1
    assert len({tuple(img.flatten().tolist()) for img in a[:, 0]}) > 1  # not all moved alike
    assert torch.equal(random_shift(x, 0, torch.Generator()), x)
    with pytest.raises(GanserveError, match="shift"):
        registry.build("ssgan", {"shift": 8})


def shifted(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``img`` translated by (dy, dx) with zeros shifted in (the reference for random_shift)."""
    out = torch.zeros_like(img)
    h, w = img.shape
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = img[max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)]
    return out


def test_consistency_loss_hand_checked_and_wired(tmp_path: Path) -> None:
    from ganserve.training.objectives.ssgan import consistency_loss

    same = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 5.0]])
    assert float(consistency_loss(same, same)) == pytest.approx(0.0, abs=1e-7)
    # p = (1, 0) vs (0, 1): squared distance 2; vs (1/2, 1/2): 0.5; mean over the two images
    a, b = torch.tensor([[1e4, 0.0], [1e4, 0.0]]), torch.tensor([[0.0, 1e4], [0.0, 0.0]])
    assert float(consistency_loss(a, b)) == pytest.approx((2.0 + 0.5) / 2, rel=1e-6)
    with pytest.raises(GanserveError, match="consistency"):
        registry.build("ssgan", {"consistency_weight": -1.0})
    with pytest.raises(GanserveError, match="consistency_shift"):
        registry.build("ssgan", {"consistency_shift": 8})

    app = registry.build("ssgan", {**TINY, "consistency_weight": 2.0, "consistency_shift": 1, "consistency_rampup": 4})
    assert [app.consistency_ramp(s) for s in (0, 1, 3, 10)] == pytest.approx([0.5, 1.0, 2.0, 2.0])
    from ganserve.training.application import TrainContext

    app.setup_training(TrainContext(note=lambda m: None))
    batch = app.make_batch(0, 0, 1)
    assert batch.x_unl_view is not None and batch.x_unl_view.shape == batch.x_unl.shape
    assert not torch.equal(batch.x_unl_view, batch.x_unl)  # shifted by up to a pixel
    plain = registry.build("ssgan", {**TINY})
    plain.setup_training(TrainContext(note=lambda m: None))
    other = plain.make_batch(0, 0, 1)  # the option off: the same batch as before, and no second view
    assert other.x_unl_view is None and torch.equal(other.x_unl, batch.x_unl) and torch.equal(other.z_g, batch.z_g)
    assert "loss_cons" in app.train_step(batch, 0) and "loss_cons" not in plain.train_step(other, 0)
