"""Face aging: network shapes, loss values on small tensors, the evaluation's baselines, and the training path on a
UTKFace-named folder of rendered faces (with a tiny loss network)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ganserve.core.errors import GanserveError
from ganserve.training import registry
from ganserve.training.application import TrainContext
from ganserve.training.checkpoint import build_from_checkpoint
from ganserve.training.age_groups import AGE_GROUPS, GROUP_CENTRES, age_group
from ganserve.training.data.faces import identity, render, scene
from utkface_files import write_utkface_folder
from ganserve.training.applications import face_aging as fa
from ganserve.training.applications import face_aging_eval as fe
from ganserve.training.networks import face_aging as fn
from ganserve.training.objectives import face_aging as fo
from ganserve.training.applications.face_judges import load_net, render_set, save_net, train_net
from ganserve.training.trainer import train

TINY = {"g_channels": 8, "g_blocks": 1, "d_channels": 8, "batch_size": 4, "eval_identities": 3,
        "train_identities": 6, "renders_per_identity": 2, "log_every": 1, "sample_every": 0, "ckpt_every": 0,
        "age_judge": "", "id_judge": ""}


@pytest.fixture(scope="module")
def nets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A few-step loss network and judges (their quality does not matter here, only that they load and run)."""
    root = tmp_path_factory.mktemp("face-nets")
    data = render_set("train", 4, 3, seed=0)
    out = {}
    for kind in ("loss_net", "age_judge", "id_judge"):
        net, facts = train_net(kind, data, seconds=60, max_steps=2, batch=8)
        out[kind] = str(save_net(root / f"{kind}.pt", net, facts))
    return out


# -- networks -------------------------------------------------------------------------------------------------------
def test_generator_shapes_range_and_start_near_identity() -> None:
    torch.manual_seed(0)
    g = fn.AgeGenerator(16, 2).eval()
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        y = g(x, fn.one_hot(torch.tensor([0, 3, 5])))
        other = g(x, fn.one_hot(torch.tensor([5, 0, 1])))
    assert y.shape == (3, 3, 64, 64) and float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert float((y - x).abs().mean()) < 0.1  # residual output with a small last layer: near the input at first
    assert float((other - y).abs().max()) > 0  # the condition reaches the output
    with pytest.raises(GanserveError):
        fn.AgeGenerator(12, 1)


def test_film_block_is_the_plain_block_at_zero_and_scales_with_the_group() -> None:
    torch.manual_seed(0)
    block = fn.CondResBlock(8).eval()
    x = torch.randn(2, 8, 4, 4)
    plain = x + block.body(x)
    cond = fn.one_hot(torch.tensor([1, 4]))
    assert torch.allclose(block(x, cond), plain)
    with torch.no_grad():
        block.film.bias[:8] = 1.0  # gamma = 1: the residual doubles
    assert torch.allclose(block(x, cond), x + 2 * block.body(x), atol=1e-6)


def test_projection_discriminator_shapes_and_projection_term() -> None:
    torch.manual_seed(0)
    d = fn.AgeDiscriminator(8).eval()
    x = torch.rand(4, 3, 64, 64)
    a, b = torch.tensor([0, 1, 2, 3]), torch.tensor([5, 5, 5, 5])
    with torch.no_grad():
        out_a, out_b = d(x, a), d(x, b)
        phi = d.features(x * 2 - 1).sum(dim=(2, 3))
        expected = ((d.embed(a) - d.embed(b)) * phi).sum(1)
    assert out_a.shape == (4,)
    assert torch.allclose(out_a - out_b, expected, atol=1e-4)


# -- losses ----------------------------------------------------------------------------------------------------------
def test_identity_loss_values() -> None:
    e = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert float(fo.identity_loss(e, e)) == pytest.approx(0.0, abs=1e-7)
    assert float(fo.identity_loss(e, torch.tensor([[0.0, 3.0], [5.0, 0.0]]))) == pytest.approx(1.0)
    assert float(fo.identity_loss(e, -e)) == pytest.approx(2.0)
    assert float(fo.identity_loss(e, torch.tensor([[1.0, 1.0], [0.0, 1.0]]))) == pytest.approx(
        (1 - 1 / math.sqrt(2) + 0) / 2)


def test_age_loss_value() -> None:
    logits = torch.tensor([[2.0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1.0]])
    expected = (-math.log(math.e**2 / (math.e**2 + 5)) - math.log(1 / (math.e + 5))) / 2
    assert float(fo.age_loss(logits, torch.tensor([0, 2]))) == pytest.approx(expected, rel=1e-6)


def test_reconstruction_loss_value() -> None:
    x = torch.zeros(1, 3, 2, 2)
    y = x.clone()
    y[0, 0, 0, 0] = 0.6
    assert float(fo.reconstruction_loss(y, x)) == pytest.approx(0.6 / 12)


def test_jitter_moves_pixels_but_keeps_them() -> None:
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    moved = fo.jitter(x, torch.Generator().manual_seed(3))
    assert moved.shape == x.shape and float(moved.sum()) == float(x.sum())
    assert torch.equal(fo.jitter(x, torch.Generator().manual_seed(3)), moved)


# -- evaluation ------------------------------------------------------------------------------------------------------
def _oracle(x: np.ndarray, cond: np.ndarray) -> np.ndarray:
    """Returns the true render at the target age: looks each input up among the held-out faces."""
    faces = fe.held_out_faces(3)
    out = []
    for img, c in zip(x, cond):
        i, _ = np.argwhere(np.all(faces == img, axis=(2, 3, 4)))[0]
        out.append(faces[i, int(c.argmax())])
    return np.stack(out)


def test_evaluation_of_the_baseline_and_of_the_truth(nets: dict[str, str]) -> None:
    judges = fe.Judges(load_net(nets["age_judge"]), load_net(nets["id_judge"]))
    same = fe.evaluate_aging(lambda x, c: x, 3, judges)
    for key in ("psnr", "ssim", "target_age_accuracy", "id_verify_rate", "id_rank1"):
        assert same[key + "_changed"] == pytest.approx(same["input_" + key + "_changed"]), key
    assert same["psnr_gain_changed"] == pytest.approx(0.0)
    assert same["input_psnr"] == pytest.approx((6 * fe.PSNR_CAP + 30 * same["input_psnr_changed"]) / 36)
    truth = fe.evaluate_aging(_oracle, 3, judges)
    assert truth["psnr_changed"] == fe.PSNR_CAP and truth["ssim_changed"] == pytest.approx(1.0)
    faces = fe.held_out_faces(3)
    judge_on_truth = float(np.mean(judges.age_of(faces.reshape(-1, 3, 64, 64)) == np.tile(np.arange(6), 3)))
    assert truth["target_age_accuracy"] == pytest.approx(judge_on_truth)
    assert truth["id_rank1"] == 1.0 and truth["eval_pairs"] == 108
    no_judges = fe.evaluate_aging(lambda x, c: x, 3, None)
    assert "target_age_accuracy" not in no_judges and no_judges["psnr"] == pytest.approx(same["psnr"])


def test_held_out_faces_are_the_renders_at_group_centres() -> None:
    faces = fe.held_out_faces(2)
    assert faces.shape == (2, 6, 3, 64, 64)
    expected = render(identity("held_out", 1), GROUP_CENTRES[4], scene("held_out", 1), 64)
    assert np.array_equal(np.rint(faces[1, 4].transpose(1, 2, 0) * 255).astype(np.uint8), expected)


# -- the training path -----------------------------------------------------------------------------------------------
def test_trains_on_a_utkface_folder_and_reloads(tmp_path: Path, nets: dict[str, str]) -> None:
    folder = tmp_path / "utk"
    write_utkface_folder(folder, "train", 10, seed=1)
    (folder / "bad_name.jpg").write_bytes(b"x")
    cfg = {**TINY, "data_dir": str(folder), "loss_net": nets["loss_net"], "age_judge": nets["age_judge"],
           "id_judge": nets["id_judge"]}
    ckpt = train("face-aging", cfg, steps=3, out_dir=tmp_path / "run", progress=False)
    payload = torch.load(ckpt, weights_only=True)
    data = payload["metrics"]["data"]
    assert (data["images"], data["misnamed"], data["undecodable"]) == (10, 1, 0)
    assert not any(k.startswith("loss_net.") for k in payload["state"])  # the frozen loss network is not saved
    lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in lines if r["kind"] == "train"]
    assert len(train_rows) == 3 and all(np.isfinite(r["loss_g"]) for r in train_rows)
    # age_acc replayed: the same seed and batches, the loss network's verdicts on the jittered outputs counted here
    # against the targets (4 a batch), one step at a time
    torch.manual_seed(payload["config"]["seed"])
    replay = registry.build("face-aging", payload["config"])
    replay.train()
    replay.setup_training(TrainContext(note=lambda m: None))
    for step, row in enumerate(train_rows):
        batch = replay.make_batch(step, 0, 1)
        with torch.no_grad():
            fake = replay.generator(batch["image"], fn.one_hot(batch["target"]))
            seen = fo.jitter(torch.cat([fake, batch["image"]]), torch.Generator().manual_seed(batch["jitter_seed"]))
            verdicts = replay.loss_nets[0].age_logits(seen[:4]).argmax(1)
        assert row["age_acc"] == int((verdicts == batch["target"]).sum()) / 4, step
        replay.train_step(batch, step)
    app = build_from_checkpoint(ckpt)
    metrics = app.evaluate()
    assert metrics == pytest.approx(payload["metrics"]["eval"] | {"eval_seconds": metrics["eval_seconds"]})
    assert metrics["eval_pairs"] == 108
    # target-age accuracy recounted from the judge's verdicts on the model's outputs, all 108 pairs and the 90 that
    # change the group; then again with an age judge whose verdicts vary from face to face, so that counting against
    # the wrong labels (the source group) would give another number
    changed = ~np.eye(6, dtype=bool)
    hits = _age_hits(app.predict, app.judges(), 3)
    assert metrics["target_age_accuracy"] == pytest.approx(hits.mean(), abs=1e-9)
    assert metrics["target_age_accuracy_changed"] == pytest.approx(hits[:, changed].mean(), abs=1e-9)
    varied = fe.Judges(_varied_age_judge(), app.judges().ident)
    figures = fe.evaluate_aging(app.predict, 3, varied)
    hits = _age_hits(app.predict, varied, 3)
    assert figures["target_age_accuracy"] == pytest.approx(hits.mean(), abs=1e-9)
    assert figures["target_age_accuracy_changed"] == pytest.approx(hits[:, changed].mean(), abs=1e-9)
    assert hits.mean() != pytest.approx(_age_hits(app.predict, varied, 3, against_source=True).mean())
    grid = app.sample_grid()
    assert grid.shape == (2 * 3 * 64, 7 * 64, 3) and grid.dtype == np.uint8  # two rows per identity (3 here)


def _age_hits(predict, judges: fe.Judges, identities: int, against_source: bool = False) -> np.ndarray:
    """(identity, source, target) -> 1.0 where the age judge names the target group of the output (or the source
    group, to show that the labels matter), each held-out face asked for all six groups at once."""
    faces = fe.held_out_faces(identities)
    hits = np.zeros((identities, 6, 6))
    for i in range(identities):
        for s in range(6):
            out = predict(np.ascontiguousarray(np.repeat(faces[i, s : s + 1], 6, axis=0)), np.eye(6, dtype=np.float32))
            hits[i, s] = judges.age_of(out) == (np.full(6, s) if against_source else np.arange(6))
    return hits


def _varied_age_judge():
    """A seeded age-judge network with a strong head, re-centred so its verdicts differ between held-out faces."""
    from ganserve.training.applications.face_judges import FaceNet, net_config

    torch.manual_seed(3)
    net = FaceNet(net_config("age_judge", 0)).eval()
    faces = torch.from_numpy(np.ascontiguousarray(fe.held_out_faces(3).reshape(-1, 3, 64, 64)))
    with torch.no_grad():
        net.age.weight.mul_(1000.0)
        net.age.bias.sub_(net.age_logits(faces).mean(0))
    assert len(set(net.age_logits(faces).argmax(1).tolist())) >= 3
    return net


def test_renderer_training_batches_are_reproducible(nets: dict[str, str]) -> None:
    from ganserve.training.application import TrainContext

    app = fa.FaceAgingApp(registry.make_config("face-aging", {**TINY, "loss_net": nets["loss_net"]}))
    app.setup_training(TrainContext(note=lambda m: None))
    a, b = app.make_batch(5, 0, 1), app.make_batch(5, 0, 1)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["target"], b["target"])
    assert not torch.equal(a["image"], app.make_batch(6, 0, 1)["image"])
    assert app.facts["data"]["identities"] == 6 and sum(app.facts["data"]["per_group"]) == 12
    losses = app.train_step(a, 0)
    assert {"loss_d", "loss_adv", "loss_rec", "loss_id", "loss_age", "loss_g"} <= set(losses)


def test_identity_or_age_loss_without_a_loss_net_is_refused() -> None:
    from ganserve.training.application import TrainContext

    app = fa.FaceAgingApp(registry.make_config("face-aging", {**TINY, "loss_net": ""}))
    with pytest.raises(GanserveError, match="loss_net"):
        app.setup_training(TrainContext(note=lambda m: None))
    missing = fa.FaceAgingApp(registry.make_config("face-aging", {**TINY, "loss_net": "/nonexistent/loss_net.pt"}))
    with pytest.raises(GanserveError, match="no such face network"):
        missing.setup_training(TrainContext(note=lambda m: None))


def test_demo_examples_are_held_out_faces_with_their_truth() -> None:
    app = fa.FaceAgingApp(registry.make_config("face-aging", TINY))
    examples = app.demo_examples(3)
    assert [e.condition for e in examples] == ["60+", "0-18", "50-59"]
    for i, e in enumerate(examples):
        assert e.image is not None and e.truth is not None and e.image.shape == (64, 64, 3)
        target = AGE_GROUPS.index(e.condition)
        assert target != age_group(fa.DEMO_SOURCE_AGE)
        assert np.array_equal(e.truth, render(identity("held_out", i), GROUP_CENTRES[target], scene("held_out", i)))


def test_quality_benchmark_writes_consistent_results(tmp_path: Path, nets: dict[str, str]) -> None:
    from ganserve.benchmarks.face_aging_quality import main as bench

    cfg = {**TINY, "loss_net": nets["loss_net"], "age_judge": nets["age_judge"], "id_judge": nets["id_judge"],
           "eval_identities": 2}
    ckpt = train("face-aging", cfg, steps=1, out_dir=tmp_path / "run", progress=False)
    judges = Path(nets["age_judge"]).parent
    out = tmp_path / "bench"
    assert bench([str(ckpt), "--judges", str(judges), "--identities", "2", "--out", str(out), "--grid-rows", "2"]) == 0
    doc = json.loads((out / "results.json").read_text())
    model = doc["model"]["summary"]
    evaluated = build_from_checkpoint(ckpt).evaluate()  # the app's own evaluation: the same figures
    assert model == pytest.approx({k: evaluated[k] for k in model}, abs=1e-9)
    matrix = np.array(doc["model"]["matrices"]["target_age_accuracy"])
    assert matrix.shape == (6, 6)
    assert matrix[~np.eye(6, dtype=bool)].mean() == pytest.approx(model["target_age_accuracy_changed"])
    assert doc["true render"]["summary"]["ssim_changed"] == pytest.approx(1.0)
    assert doc["input unchanged"]["summary"]["psnr"] == pytest.approx(
        (6 * fe.PSNR_CAP + 30 * doc["input unchanged"]["summary"]["psnr_changed"]) / 36)
    assert "| model |" in (out / "results.md").read_text()
    from PIL import Image

    assert Image.open(out / "grid.png").size == (64 * 2 * 13 + 6 * 4, 18 + 2 * 64 * 2)
    assert bench([str(ckpt), "--judges", str(judges), "--source", "90+", "--out", str(out)]) == 2


# -- loss-network ensemble and the generator's moving average ------------------------------------------------------
def test_ensemble_losses_average_the_networks(nets: dict[str, str]) -> None:
    torch.manual_seed(0)
    a = load_net(nets["loss_net"], "loss_net")
    b = load_net(nets["loss_net"], "loss_net")
    with torch.no_grad():
        for p in b.parameters():
            p.add_(0.05 * torch.randn_like(p))  # a second, different network
    pair = torch.rand(8, 3, 64, 64)
    targets = torch.tensor([0, 2, 4, 5])
    single = [fo.ensemble_losses((net,), pair, 4, targets) for net in (a, b)]
    for net, (ident, age, hits) in zip((a, b), single):  # one network: exactly its own losses
        emb, _, logits = net(pair)
        assert float(ident) == pytest.approx(float(fo.identity_loss(emb[:4], emb[4:])), rel=1e-6)
        assert float(age) == pytest.approx(float(fo.age_loss(logits[:4], targets)), rel=1e-6)
        assert hits == pytest.approx(float((logits[:4].argmax(1) == targets).float().mean()))
    ident, age, hits = fo.ensemble_losses((a, b), pair, 4, targets)
    assert float(ident) == pytest.approx((float(single[0][0]) + float(single[1][0])) / 2, rel=1e-6)
    assert float(age) == pytest.approx((float(single[0][1]) + float(single[1][1])) / 2, rel=1e-6)
    assert hits == pytest.approx((single[0][2] + single[1][2]) / 2)
    assert float(single[0][1]) != pytest.approx(float(single[1][1]), rel=1e-4)  # the two really differ


def test_loss_net_list_is_parsed_and_loaded(nets: dict[str, str]) -> None:
    from ganserve.training.application import TrainContext

    assert fa.loss_net_paths(" a.pt , b.pt") == ["a.pt", "b.pt"]
    with pytest.raises(GanserveError, match="comma-separated"):
        fa.loss_net_paths("a.pt,,b.pt")
    both = f"{nets['loss_net']},{nets['loss_net']}"
    app = fa.FaceAgingApp(registry.make_config("face-aging", {**TINY, "loss_net": both}))
    app.setup_training(TrainContext(note=lambda m: None))
    assert len(app.loss_nets) == 2
    assert {"loss_id", "loss_age", "age_acc"} <= set(app.train_step(app.make_batch(0, 0, 1), 0))


def test_moving_average_is_what_is_evaluated_and_exported(tmp_path: Path, nets: dict[str, str]) -> None:
    with pytest.raises(GanserveError, match="ema_decay"):
        fa.FaceAgingApp(registry.make_config("face-aging", {**TINY, "ema_decay": 1.0}))
    cfg = {**TINY, "loss_net": nets["loss_net"], "ema_decay": 0.5}
    ckpt = train("face-aging", cfg, steps=2, out_dir=tmp_path / "run", progress=False)
    app = build_from_checkpoint(ckpt)
    assert app.ema is not None and app.inference_generator() is app.ema
    live = dict(app.generator.named_parameters())
    assert any(not torch.equal(p, live[k]) for k, p in app.ema.named_parameters())  # it lags the live weights
    x = np.ascontiguousarray(fe.held_out_faces(2)[:, 1])
    cond = np.eye(6, dtype=np.float32)[[0, 5]]
    with torch.no_grad():
        expected = app.ema.eval()(torch.from_numpy(x), torch.from_numpy(cond)).numpy()
        live_out = app.generator.eval()(torch.from_numpy(x), torch.from_numpy(cond)).numpy()
    assert np.allclose(app.predict(x, cond), expected, atol=1e-6)
    assert not np.allclose(expected, live_out, atol=1e-6)
    with torch.no_grad():
        exported = app.export_spec().module(torch.from_numpy(x), torch.from_numpy(cond)).numpy()
    assert np.allclose(exported, expected, atol=1e-6)
    # one update moves every averaged weight halfway (decay 0.5) towards the live one
    before = {k: p.clone() for k, p in app.ema.named_parameters()}
    app._update_ema()
    for k, p in app.ema.named_parameters():
        assert torch.allclose(p, 0.5 * before[k] + 0.5 * live[k], atol=1e-7)


def test_headline_is_the_target_age_accuracy_where_judges_exist(nets: dict[str, str]) -> None:
    judges = {"age_judge": nets["age_judge"], "id_judge": nets["id_judge"]}
    judged = fa.FaceAgingApp(registry.make_config("face-aging", {**TINY, **judges}))
    spec = judged.export_spec()
    assert spec.quality_key == "target_age_accuracy_changed"
    assert spec.quality_key in judged.evaluate()  # shipping can compare it
    assert fa.FaceAgingApp(registry.make_config("face-aging", TINY)).export_spec().quality_key == "psnr_changed"
