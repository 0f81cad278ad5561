"""The loss network and the independent judges: architectures, training signal, files, and their report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ganserve.core.errors import GanserveError
from ganserve.training.applications import face_judges as fj


def test_judges_differ_from_the_loss_net() -> None:
    loss = fj.net_config("loss_net", 10)
    age, ident = fj.net_config("age_judge", 10), fj.net_config("id_judge", 10)
    assert not loss.norm and age.norm and ident.norm
    assert loss.widths != age.widths and loss.widths != ident.widths
    assert ident.identities == 10 and not ident.age_head and age.identities == 0 and age.age_head
    with pytest.raises(GanserveError):
        fj.net_config("other", 1)


def test_shapes_and_normalised_embedding() -> None:
    torch.manual_seed(0)
    net = fj.FaceNet(fj.net_config("loss_net", 7)).eval()
    x = torch.rand(2, 3, 64, 64)
    emb, id_logits, age_logits = net(x)
    assert emb.shape == (2, 64) and id_logits.shape == (2, 7) and age_logits.shape == (2, 6)
    assert torch.allclose(net.features(x).norm(dim=1), torch.ones(2), atol=1e-5)
    assert net.age_logits(x).shape == (2, 6)
    with pytest.raises(GanserveError, match="no age head"):
        fj.FaceNet(fj.net_config("id_judge", 3)).age_logits(x)


def test_render_set_labels() -> None:
    data = fj.render_set("judge", 3, 4, seed=1)
    assert data.images.shape == (12, 3, 64, 64) and data.ids.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert all(0 <= a <= 80 for a in data.ages.tolist())
    assert data.groups.tolist() == [fj.age_group(a) for a in data.ages.tolist()]
    assert torch.equal(fj.render_set("judge", 3, 4, seed=1).images, data.images)


def test_training_lowers_the_loss_and_files_round_trip(tmp_path: Path) -> None:
    data = fj.render_set("train", 4, 4, seed=0)
    net, facts = fj.train_net("loss_net", data, seconds=60, max_steps=1, batch=16)
    _, later = fj.train_net("loss_net", data, seconds=60, max_steps=40, batch=16)
    assert later["final_loss_id"] < facts["final_loss_id"] and later["final_loss_age"] < facts["final_loss_age"]
    path = fj.save_net(tmp_path / "nets" / "loss_net.pt", net, facts)
    assert [p.name for p in path.parent.iterdir()] == ["loss_net.pt"]  # no temp file left behind
    back = fj.load_net(path, "loss_net")
    x = data.images[:3]
    assert torch.allclose(back.features(x), net.features(x)) and not any(p.requires_grad for p in back.parameters())
    with pytest.raises(GanserveError, match="not a age_judge"):
        fj.load_net(path, "age_judge")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(GanserveError, match="not a readable"):
        fj.load_net(tmp_path / "junk.pt")
    with pytest.raises(GanserveError, match="no such face network"):
        fj.load_net(tmp_path / "missing.pt")


def test_command_writes_three_nets_and_a_report(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    report = fj.train_all(tmp_path / "j", minutes=1.0, identities=3, per_identity=2, max_steps=2)
    assert sorted(p.name for p in (tmp_path / "j").iterdir()) == ["age_judge.pt", "id_judge.pt", "judges.json",
                                                                  "loss_net.pt"]
    saved = json.loads((tmp_path / "j" / "judges.json").read_text())
    assert saved["loss_net"]["pool"] == "train" and saved["age_judge"]["pool"] == "judge"
    held = saved["held_out_true_renders"]
    # recounted here from the saved judges' verdicts on the 16 held-out identities x 6 group-centre renders
    age, ident = fj.load_net(tmp_path / "j" / "age_judge.pt"), fj.load_net(tmp_path / "j" / "id_judge.pt")
    x, groups, owners = _held_out_renders(16)
    with torch.no_grad():
        hits = int((age.age_logits(x).argmax(1) == groups).sum())
        sim = (ident.features(x) @ ident.features(x).T).tolist()
    assert held["identities"] == 16.0 and held["age_accuracy"] == pytest.approx(hits / 96, abs=1e-6)
    genuine = [sim[i][j] for i in range(96) for j in range(96) if i != j and owners[i] == owners[j]]
    impostor = [sim[i][j] for i in range(96) for j in range(96) if owners[i] != owners[j]]
    assert len(genuine) == 16 * 6 * 5 and len(impostor) == 96 * 90
    tau = held["threshold"]  # the 1% false-accept point: about 1% of impostor pairs reach it (float32 ties aside)
    assert sum(v >= tau for v in impostor) / len(impostor) == pytest.approx(0.01, abs=0.002)
    assert held["verify_rate_at_far1"] == pytest.approx(sum(v >= tau for v in genuine) / len(genuine), abs=0.01)
    # an age judge that always answers one group is right exactly once per identity: accuracy 1/6, not 1/16 or 0
    constant = fj.FaceNet(fj.net_config("age_judge", 0)).eval()
    with torch.no_grad():
        constant.age.weight.zero_()
        constant.age.bias.copy_(torch.tensor([0.0, 0, 0, 0, 5.0, 0]))
    assert fj.true_render_report(constant, ident)["age_accuracy"] == pytest.approx(1 / 6)
    assert report["id_judge"]["steps"] == 2
    assert fj.main(["--out", str(tmp_path / "k"), "--minutes", "0"]) == 2
    assert "error:" in capsys.readouterr().err


def _held_out_renders(identities: int) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Each held-out identity rendered in its own scene at the six group centres, with group and identity labels."""
    from ganserve.training.age_groups import GROUP_CENTRES
    from ganserve.training.data.faces import identity, render, scene

    faces, groups, owners = [], [], []
    for i in range(identities):
        for g, age in enumerate(GROUP_CENTRES):
            faces.append(render(identity("held_out", i), age, scene("held_out", i), 64))
            groups.append(g)
            owners.append(i)
    x = torch.from_numpy(np.stack(faces)).permute(0, 3, 1, 2).float() / 255.0
    return x, torch.tensor(groups), owners


def test_command_reads_a_config_and_refuses_unknown_keys(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = tmp_path / "j.yaml"
    cfg.write_text("minutes: 0.001\nidentities: 2\nper_identity: 1\nbogus: 3\n")
    assert fj.main(["--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    assert "unknown key(s) bogus" in capsys.readouterr().err
    cfg.write_text("minutes: 0.001\nidentities: 2\nper_identity: 1\n")
    assert fj.main(["--config", str(cfg), "--out", str(tmp_path / "o")]) == 0
    report = json.loads((tmp_path / "o" / "judges.json").read_text())
    assert (report["identities"], report["per_identity"], report["minutes_each"]) == (2, 1, 0.001)


def test_only_retrains_the_named_network_and_keeps_the_others(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "j"
    fj.train_all(out, minutes=1.0, identities=3, per_identity=2, max_steps=2)
    kept = {k: (out / fj.FILES[k]).read_bytes() for k in ("loss_net", "id_judge")}
    old_age = (out / "age_judge.pt").read_bytes()
    assert fj.main(["--out", str(out), "--only", "age_judge", "--minutes", "0.01", "--identities", "4",
                    "--per-identity", "3"]) == 0
    assert all((out / fj.FILES[k]).read_bytes() == v for k, v in kept.items())
    assert (out / "age_judge.pt").read_bytes() != old_age
    saved = json.loads((out / "judges.json").read_text())
    assert saved["age_judge"]["identities"] == 4 and saved["age_judge"]["per_identity"] == 3
    assert saved["loss_net"]["identities"] == 3 and saved["last_trained"] == ["age_judge"]
    capsys.readouterr()
    assert fj.main(["--out", str(out), "--only", "judge"]) == 2
    assert "unknown face network kind" in capsys.readouterr().err
    assert fj.main(["--out", str(tmp_path / "empty"), "--only", "age_judge", "--minutes", "1"]) == 2
    assert "no such face network" in capsys.readouterr().err
