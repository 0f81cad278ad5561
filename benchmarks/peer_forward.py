"""The model side of every peer server: load the TorchScript, run a batch of .npy tensors in one forward, split.

numpy and torch only, so the same source runs inside each peer's own venv: peers.server_source() puts it in front
of a peer's handler (TorchServe) or LitAPI (LitServe), and the bench's client uses its .npy codec.
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np

BF16_ENV = "GANSERVE_PEER_BF16"  # "1": run under bf16 autocast (the bench sets it where the CPU has bf16 hardware)


def to_npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def from_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def bf16_from_env() -> bool:
    return os.environ.get(BF16_ENV, "0") == "1"


def load_model(path: str):
    """The TorchScript network in eval mode with channels_last weights (its strongest CPU layout)."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit's deprecation notice
        model = torch.jit.load(path, map_location="cpu").eval()
    return model.to(memory_format=torch.channels_last)


def forward_batch(model, arrays: list[np.ndarray], bf16: bool) -> list[np.ndarray]:
    """One forward per group of same-shaped requests (each a (1, C, H, W) or (C, H, W) array): stacked along the
    batch axis, channels_last, under bf16 autocast if asked; the float32 answers come back in request order."""
    import torch

    out: list[np.ndarray | None] = [None] * len(arrays)
    groups: dict[tuple, list[int]] = {}
    for i, a in enumerate(arrays):
        groups.setdefault(tuple(a.shape[-3:]), []).append(i)
    for idx in groups.values():
        x = torch.from_numpy(np.concatenate([arrays[i].reshape(1, *arrays[i].shape[-3:]) for i in idx]))
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = model(x)
        y = y.float().contiguous().numpy()
        for j, i in enumerate(idx):
            out[i] = y[j:j + 1]
    return out  # type: ignore[return-value]
