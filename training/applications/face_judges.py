"""Training and storing the face networks that are not the generator: the loss network it learns from, and the two
independent judges (the network itself, ``FaceNet``, is in ``training/networks/face_aging.py``).

- ``loss_net``: identity embedding + age-group head, trained on the *training* identities' renders; the face-aging
  generator's identity-preserving loss compares its features and its age loss reads the age head (as in
  Wang et al. 2018's identity-preserved conditional GAN, which also learns from a pre-trained age classifier).
- ``age_judge`` and ``id_judge``: an age-group classifier and an identity embedding with another architecture,
  trained only on the *judge* identities' renders (a pool disjoint from training and held-out identities), never
  on generated faces. They score the generator on held-out identities; they never train it.

Train all three with one command (about 1.5 minutes each on 2 cores):

    python -m ganserve.training.applications.face_judges --config training/configs/face_judges_cpu.yaml --out models/face-judges

Each file is a small dict saved with torch.save (kind, config, state, metrics), read back with ``load_net``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ganserve.core.errors import GanserveError, first_line
from ganserve.core.shipped import from_shipped
from ganserve.training.config import load_config_file
from ganserve.training.age_groups import AGE_GROUPS, GROUP_CENTRES, age_group
from ganserve.training.data.faces import identity, render, scene
from ganserve.training.networks.face_aging import FACE_NET_KINDS, FaceNet, NetConfig, net_config

KINDS = FACE_NET_KINDS
FILES = {kind: f"{kind}.pt" for kind in KINDS}


# -- data -------------------------------------------------------------------------------------------------------
@dataclass
class FaceSet:
    """Rendered faces with their identity index and age, as float tensors ready for training."""

    images: torch.Tensor  # N x 3 x 64 x 64 in [0, 1]
    ids: torch.Tensor  # N int64
    ages: torch.Tensor  # N float32
    groups: torch.Tensor  # N int64


def render_set(pool: str, identities: int, per_identity: int, seed: int, size: int = 64, start: int = 0) -> FaceSet:
    """``per_identity`` renders of each identity at uniform random ages (0-80) in random scenes."""
    rng = np.random.default_rng(seed)
    images, ids, ages = [], [], []
    for i in range(identities):
        f = identity(pool, start + i)
        for _ in range(per_identity):
            age = float(rng.uniform(0, 80))
            images.append(render(f, age, scene(pool, start + i, int(rng.integers(1 << 30))), size))
            ids.append(i)
            ages.append(age)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0).contiguous()
    a = torch.tensor(ages, dtype=torch.float32)
    return FaceSet(x, torch.tensor(ids), a, torch.tensor([age_group(v) for v in ages]))


# -- training ---------------------------------------------------------------------------------------------------
def train_net(kind: str, data: FaceSet, seconds: float, seed: int = 0, batch: int = 64, lr: float = 2e-3,
              max_steps: int | None = None) -> tuple[FaceNet, dict[str, float]]:
    """Train one face network on ``data`` for ``seconds`` (or ``max_steps``): identity softmax and/or age CE."""
    torch.manual_seed(seed)
    identities = int(data.ids.max()) + 1
    net = FaceNet(net_config(kind, identities))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    start, step, losses = time.monotonic(), 0, {}
    while (max_steps is None or step < max_steps) and time.monotonic() - start < seconds:
        idx = torch.randint(len(data.ids), (batch,), generator=gen)
        x = data.images[idx]
        x = torch.where(torch.rand(batch, 1, 1, 1, generator=gen) < 0.5, x, x.flip(3))  # mirror
        _, id_logits, age_logits = net(x)
        loss = torch.zeros(())
        if id_logits is not None:
            losses["id"] = F.cross_entropy(id_logits, data.ids[idx])
            loss = loss + losses["id"]
        if age_logits is not None:
            losses["age"] = F.cross_entropy(age_logits, data.groups[idx])
            loss = loss + losses["age"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
    net.eval()
    return net, {"steps": float(step), "seconds": time.monotonic() - start,
                 **{f"final_loss_{k}": float(v.detach()) for k, v in losses.items()}}


def save_net(path: str | Path, net: FaceNet, metrics: dict[str, Any]) -> Path:
    """Write a face network atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": "ganserve-face-net", "config": asdict(net.cfg), "state": net.state_dict(), "metrics": metrics}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".pt")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; these files ship with the project
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_net(path: str | Path, kind: str | None = None) -> FaceNet:
    """Read a face network written by ``save_net`` (eval mode, frozen); a one-line error for anything else."""
    path = from_shipped(path)
    if not path.is_file():
        raise GanserveError(f"{path}: no such face network file (train with: python -m ganserve.training.applications.face_judges)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise GanserveError(f"{path}: not a readable face network ({first_line(exc, 120)})") from exc
    if not isinstance(payload, dict) or payload.get("format") != "ganserve-face-net":
        raise GanserveError(f"{path}: not a face network file")
    cfg = NetConfig(**{**payload["config"], "widths": tuple(payload["config"]["widths"])})
    if kind is not None and cfg.kind != kind:
        raise GanserveError(f"{path}: holds a {cfg.kind}, not a {kind}")
    net = FaceNet(cfg)
    net.load_state_dict(payload["state"])
    net.eval().requires_grad_(False)
    return net


# -- measuring the judges on true renders -------------------------------------------------------------------------
@torch.no_grad()
def true_render_report(age_judge: FaceNet, id_judge: FaceNet, identities: int = 16) -> dict[str, float]:
    """Judges on held-out identities' true renders at the group centres: age accuracy, verification at 1% FAR."""
    faces = [[render(identity("held_out", i), age, scene("held_out", i), 64) for age in GROUP_CENTRES]
             for i in range(identities)]
    x = torch.from_numpy(np.stack([f for row in faces for f in row])).permute(0, 3, 1, 2).float() / 255.0
    groups = torch.arange(len(AGE_GROUPS)).repeat(identities)
    ids = torch.arange(identities).repeat_interleave(len(AGE_GROUPS))
    acc = float((age_judge.age_logits(x).argmax(1) == groups).float().mean())
    emb = id_judge.features(x)
    sim = emb @ emb.T
    same = ids[:, None] == ids[None, :]
    off = ~torch.eye(len(ids), dtype=torch.bool)
    impostor = sim[~same]
    tau = float(torch.quantile(impostor, 0.99))
    genuine = sim[same & off]
    return {"age_accuracy": acc, "verify_rate_at_far1": float((genuine >= tau).float().mean()),
            "threshold": tau, "identities": float(identities)}


def train_all(out: str | Path, minutes: float = 1.5, identities: int = 160, per_identity: int = 16,
              seed: int = 0, max_steps: int | None = None, kinds: tuple[str, ...] = KINDS) -> dict[str, Any]:
    """Train the loss net (training identities) and both judges (judge identities); write them and judges.json.

    ``kinds`` retrains only some of them: the others are read from ``out`` as they are, and judges.json keeps their
    records (each network's record carries its own pool size, renders and time).
    """
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown or not kinds:
        raise GanserveError(f"unknown face network kind(s) {', '.join(unknown) or '(none)'}; known: {', '.join(KINDS)}")
    out = Path(out)
    nets = {kind: load_net(out / FILES[kind], kind) for kind in KINDS if kind not in kinds}
    previous = out / "judges.json"
    report: dict[str, Any] = json.loads(previous.read_text()) if nets and previous.is_file() else {}
    t0 = time.monotonic()
    pools = {"loss_net": ("train", seed), "age_judge": ("judge", seed + 1), "id_judge": ("judge", seed + 1)}
    data = {pool: render_set(pool, identities, per_identity, pool_seed)
            for pool, pool_seed in {pools[k] for k in kinds}}
    report.update({"render_seconds": time.monotonic() - t0, "identities": identities, "per_identity": per_identity,
                   "minutes_each": minutes, "seed": seed, "last_trained": list(kinds)})
    for kind in kinds:
        pool = pools[kind][0]
        net, facts = train_net(kind, data[pool], minutes * 60, seed=seed, max_steps=max_steps)
        facts.update({"pool": pool, "identities": identities, "per_identity": per_identity, "minutes": minutes})
        save_net(out / FILES[kind], net, facts)
        nets[kind] = net
        report[kind] = facts
        print(f"[face-judges] {kind}: {facts['steps']:.0f} steps in {facts['seconds']:.0f} s", file=sys.stderr)
    report["held_out_true_renders"] = true_render_report(nets["age_judge"], nets["id_judge"])
    report["loss_net_on_held_out"] = true_render_report(nets["loss_net"], nets["loss_net"])
    tmp = out / ".judges.json.tmp"
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, out / "judges.json")
    return report


def main(argv: list[str] | None = None) -> int:
    """Command line: train the loss network and the two judges into --out."""
    p = argparse.ArgumentParser(prog="python -m ganserve.training.applications.face_judges", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="models/face-judges")
    p.add_argument("--config", default=None, help="YAML/JSON with minutes, identities, per_identity, seed")
    p.add_argument("--minutes", type=float, default=None, help="training time per network (default 1.5)")
    p.add_argument("--identities", type=int, default=None, help="identities per pool (default 160)")
    p.add_argument("--per-identity", type=int, default=None, help="renders per identity (default 16)")
    p.add_argument("--seed", type=int, default=None, help="default 0")
    p.add_argument("--only", default=",".join(KINDS),
                   help=f"comma-separated networks to (re)train, the others are kept from --out (default: all of {', '.join(KINDS)})")
    args = p.parse_args(argv)
    try:
        values = {"minutes": 1.5, "identities": 160, "per_identity": 16, "seed": 0}
        if args.config:
            extra = load_config_file(args.config)
            unknown = sorted(set(extra) - set(values))
            if unknown:
                raise GanserveError(f"{args.config}: unknown key(s) {', '.join(unknown)}; known: {', '.join(values)}")
            values.update(extra)
        for key in values:
            if getattr(args, key) is not None:
                values[key] = getattr(args, key)
        args.minutes, args.identities = float(values["minutes"]), int(values["identities"])
        args.per_identity, args.seed = int(values["per_identity"]), int(values["seed"])
        if args.minutes <= 0 or args.identities < 2 or args.per_identity < 1:
            raise GanserveError("--minutes must be > 0, --identities >= 2 and --per-identity >= 1")
        kinds = tuple(k.strip() for k in args.only.split(",") if k.strip())
        report = train_all(args.out, args.minutes, args.identities, args.per_identity, args.seed, kinds=kinds)
    except GanserveError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report["held_out_true_renders"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
