"""`ganserve import FILE --name NAME`: weights trained elsewhere, recognised by their key layout, loaded strictly into
the project's own implementation of the network, and written as a ganserve checkpoint that `ganserve export`,
serving, the bench and the demo take unchanged.

Files are read as tensors only: ``.pth``/``.pt`` through ``torch.load(weights_only=True)`` (a pickle that would run
code is refused before anything runs) and ``.safetensors`` through the safetensors library. ``FORMATS`` is the table:
each format names the keys every such file has, the grammar all its keys follow, how its hyper-parameters are read
from key names and shapes, how its keys map onto the project's network, and which application hosts it.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import pickle
import re
import shutil
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ganserve.core.contract import check_model_name
from ganserve.core.errors import GanserveError, RepositoryError, first_line
from ganserve.core.files import file_sha256
from ganserve.export.exporter import export_checkpoint
from ganserve.export.repository import check_target, write_model
from ganserve.training import registry
from ganserve.training.checkpoint import git_commit, save_checkpoint
from ganserve.training.config import config_dict
from ganserve.training.registry import merge_config

CHECKPOINT = "checkpoint.pt"
RECORD = "import.json"
DEFAULT_OUT = Path("runs") / "import"
# Where BasicSR-style files keep the weights, in order of preference (the EMA weights are the ones released).
WRAPPERS = ("params_ema", "params", "state_dict")
_NORM_PARAMS = "weight|bias|running_mean|running_var|num_batches_tracked"


class ImportFailure(GanserveError):
    """The file cannot be imported: unreadable, unsafe, of an unknown layout, or its weights do not fit."""


State = dict[str, torch.Tensor]


@dataclass
class Reading:
    """What a format's reader found in a file: the application and config that host it, and its hyper-parameters."""

    application: str  # registered application whose ``generator`` takes the weights
    config: dict[str, Any]  # config values for that application (the generator spec, the SR scale, ...)
    hyper: dict[str, Any]  # the hyper-parameters read from the keys and shapes (recorded in the card)
    channels: str = "RGB"  # channel order the network was trained on
    notes: list[str] = field(default_factory=list)  # assumptions that the keys cannot tell, and what was done
    drop: tuple[str, ...] = ()  # file keys that carry nothing the network keeps (stale instance-norm statistics)


@dataclass(frozen=True)
class Format:
    """One known layout: how to tell it (``required`` keys present, every key matching ``grammar``), read it and
    map it onto the project's network."""

    name: str  # the --format value
    title: str  # what it is, for messages and the card
    required: tuple[str, ...]  # keys every file of this format has (matched literally)
    grammar: tuple[str, ...]  # regular expressions that every key of such a file matches
    read: Callable[[State], Reading]  # hyper-parameters from key names and shapes (after ``rename``)
    rename: Callable[[State], State] = lambda state: dict(state)  # file keys -> the network's keys
    key_map: str = "identity: the file's keys are the network's"

    def mismatch(self, keys: Iterable[str]) -> tuple[list[str], list[str]]:
        """(required keys the file lacks, file keys outside this format's grammar), each in order."""
        keys = list(keys)
        present = set(keys)
        patterns = [re.compile(f"(?:{g})\\Z") for g in self.grammar]
        missing = [k for k in self.required if k not in present]
        unexpected = [k for k in keys if not any(p.match(k) for p in patterns)]
        return missing, unexpected


# -- reading a file ----------------------------------------------------------------------------------------------------
def _refused_global(exc: BaseException) -> str:
    """The global a weights-only unpickler refused (e.g. ``builtins.open``), where the message names it."""
    found = re.search(r"(?:Unsupported global: GLOBAL|global) ([\w.]+)", str(exc))
    return found.group(1) if found else ""


def read_tensors(path: str | Path) -> tuple[State, str]:
    """The tensors of a ``.pth``/``.pt`` or ``.safetensors`` file and where in it they were (``params_ema``, ...).

    Never runs code from the file: pickles go through ``torch.load(weights_only=True)``."""
    path = Path(path)
    if not path.exists():
        raise ImportFailure(f"{path}: no such file")
    if not path.is_file():
        raise ImportFailure(f"{path}: {'a folder' if path.is_dir() else 'not a regular file'}, not a weights file")
    try:
        with open(path, "rb") as fh:
            empty = not fh.read(1)
    except OSError as exc:
        raise ImportFailure(f"{path}: cannot be read ({exc.strerror or first_line(exc)})") from exc
    if empty:
        raise ImportFailure(f"{path}: empty file")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            loaded: Any = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise ImportFailure(f"{path}: truncated or corrupt safetensors file ({first_line(exc)})") from exc
    elif suffix in (".pth", ".pt"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                loaded = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            what = _refused_global(exc)
            if what or "weights_only" in str(exc).lower() or "weights only" in str(exc).lower():
                raise ImportFailure(
                    f"{path}: refused: the pickle holds more than tensors"
                    f"{f' (it would call {what})' if what else ''}; only weights are read "
                    "(torch.load weights_only=True), nothing in the file ran") from exc
            raise ImportFailure(f"{path}: truncated or corrupt .pth file ({first_line(exc)})") from exc
        except Exception as exc:  # torch raises many types for truncated zips and foreign files
            with open(path, "rb") as fh:
                cut = fh.read(2) == b"PK" and not zipfile.is_zipfile(path)
            reason = "a zip archive (torch.save's format) whose end is missing" if cut else first_line(exc)
            raise ImportFailure(f"{path}: truncated or corrupt .pth file ({reason})") from exc
    else:
        raise ImportFailure(f"{path}: unknown file type {suffix or '(none)'!r}; give a .pth, .pt or .safetensors file")
    return _unwrap(path, loaded)


def _unwrap(path: Path, loaded: Any) -> tuple[State, str]:
    """The state dict inside what was loaded: under params_ema / params / state_dict, or the mapping itself."""
    where = ""
    if isinstance(loaded, Mapping):
        for key in WRAPPERS:
            if isinstance(loaded.get(key), Mapping):
                loaded, where = loaded[key], key
                break
    if not isinstance(loaded, Mapping) or not loaded:
        held = "an empty mapping" if isinstance(loaded, Mapping) else type(loaded).__name__
        raise ImportFailure(f"{path}: holds {held}, not a state dict of tensors")
    bad = [k for k, v in loaded.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ImportFailure(f"{path}: not a state dict of tensors ({bad[0]!r} holds "
                            f"{type(loaded[bad[0]]).__name__}; wrappers read: {', '.join(WRAPPERS)})")
    state = dict(loaded)
    if all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
        where = f"{where + ' ' if where else ''}(module. prefix removed)"
    return state, where


# -- shape helpers for the readers -------------------------------------------------------------------------------------
def _shape(state: State, key: str, ndim: int) -> tuple[int, ...]:
    if key not in state:
        raise ImportFailure(f"no {key} in the file")
    shape = tuple(state[key].shape)
    if len(shape) != ndim:
        raise ImportFailure(f"{key} has shape {list(shape)}, not a {ndim}-d tensor")
    return shape


def _indices(state: State, prefix: str = "body") -> list[int]:
    """Sorted block numbers N of the ``prefix.N.`` keys; a gap in the numbering is an error."""
    regex = re.compile(rf"{re.escape(prefix)}\.(\d+)\.")
    found = sorted({int(m.group(1)) for k in state if (m := regex.match(k))})
    if found and found != list(range(found[-1] + 1)):
        gap = next(i for i in range(found[-1] + 1) if i not in found)
        raise ImportFailure(f"{prefix}.N is numbered 0..{found[-1]} with {prefix}.{gap} missing")
    return found


def _three_channels(what: str, in_ch: int, out_ch: int) -> None:
    if (in_ch, out_ch) != (3, 3):
        raise ImportFailure(f"{what} takes {in_ch} and returns {out_ch} channels; ganserve serves RGB in and out "
                            "(3, 3)")


def _sr(network: str, scale: int, spec: dict[str, Any], notes: list[str] | None = None) -> Reading:
    hyper = {"scale": scale, **spec}
    generator = {"type": network, "num_in_ch": 3, "num_out_ch": 3, **spec}
    return Reading("srresnet", {"scale": scale, "generator": generator}, hyper, notes=notes or [])


# -- the formats -------------------------------------------------------------------------------------------------------
_RRDB_UNSHUFFLE = {3: 4, 12: 2, 48: 1}  # conv_first input channels of an RGB RRDBNet -> scale


def _read_rrdbnet(state: State) -> Reading:
    num_feat, in_ch = _shape(state, "conv_first.weight", 4)[:2]
    last = _shape(state, "conv_last.weight", 4)[0]
    blocks = _indices(state)
    if not blocks:
        raise ImportFailure("no body.N blocks")
    if in_ch not in _RRDB_UNSHUFFLE:
        raise ImportFailure(f"conv_first.weight takes {in_ch} input channels; an RGB RRDBNet takes 3 (x4), "
                            "12 (x2, pixel-unshuffled by 2) or 48 (x1, by 4)")
    _three_channels("this RRDBNet", 3, last)
    grow = _shape(state, "body.0.rdb1.conv1.weight", 4)[0]
    scale = _RRDB_UNSHUFFLE[in_ch]
    notes = [f"input pixel-unshuffled by {4 // scale}: sides must be multiples of {4 // scale}"] if scale < 4 else []
    return _sr("rrdbnet", scale, {"num_feat": num_feat, "num_block": len(blocks), "num_grow_ch": grow}, notes)


_ESRGAN_OLD_FIXED = {"model.0": "conv_first", "model.3": "conv_up1", "model.6": "conv_up2", "model.8": "conv_hr",
                     "model.10": "conv_last"}


def _rename_esrgan_old(state: State) -> State:
    """The original ESRGAN release's keys (``model.N`` Sequential) under BasicSR RRDBNet's names."""
    rdb = re.compile(r"model\.1\.sub\.(\d+)\.RDB([123])\.conv([1-5])\.0\.(weight|bias)\Z")
    trunk = re.compile(r"model\.1\.sub\.(\d+)\.(weight|bias)\Z")
    blocks = {int(m.group(1)) for k in state if (m := rdb.match(k))}
    out: State = {}
    for key, value in state.items():
        head, _, param = key.rpartition(".")
        if (m := rdb.match(key)):
            out[f"body.{m.group(1)}.rdb{m.group(2)}.conv{m.group(3)}.{m.group(4)}"] = value
        elif (m := trunk.match(key)):
            if int(m.group(1)) != len(blocks):
                raise ImportFailure(f"{key}: the trunk conv should follow the {len(blocks)} RRDB blocks "
                                    f"(model.1.sub.{len(blocks)})")
            out[f"conv_body.{param}"] = value
        elif head in _ESRGAN_OLD_FIXED:
            out[f"{_ESRGAN_OLD_FIXED[head]}.{param}"] = value
        else:
            out[key] = value
    return out


def _read_esrgan_old(state: State) -> Reading:
    reading = _read_rrdbnet(state)
    if reading.hyper["scale"] != 4:
        raise ImportFailure("the original ESRGAN layout is x4 (3 input channels), "
                            f"this one takes {3 * (4 // reading.hyper['scale']) ** 2}")
    return reading


def _read_srvgg(state: State) -> Reading:
    indices = _indices(state)
    convs = [i for i in indices if state.get(f"body.{i}.weight") is not None and state[f"body.{i}.weight"].ndim == 4]
    acts = [i for i in indices if i not in convs]
    if not convs or convs != list(range(0, 2 * len(convs), 2)):
        raise ImportFailure(f"convolutions at body.{{{','.join(map(str, convs))}}}; SRVGGNetCompact has them at even "
                            "indices, each followed by an activation")
    if not acts:
        raise ImportFailure("the activations hold no weights (relu or leakyrelu), which the keys cannot tell apart; "
                            "the PReLU layout (every Real-ESRGAN compact release) is read")
    num_feat, in_ch = _shape(state, "body.0.weight", 4)[:2]
    for i in acts:
        if _shape(state, f"body.{i}.weight", 1) != (num_feat,):
            raise ImportFailure(f"body.{i}.weight has shape {list(state[f'body.{i}.weight'].shape)}, "
                                f"a PReLU of {num_feat} features has [{num_feat}]")
    last_out = _shape(state, f"body.{convs[-1]}.weight", 4)[0]
    scale = math.isqrt(max(last_out // 3, 1))
    if last_out % 3 or scale * scale * 3 != last_out:
        raise ImportFailure(f"the last conv body.{convs[-1]} returns {last_out} channels, not 3 x scale^2")
    _three_channels("this SRVGGNetCompact", in_ch, 3)
    return _sr("srvgg-compact", scale, {"num_feat": num_feat, "num_conv": len(convs) - 2, "act_type": "prelu"})


def _read_msrresnet(state: State) -> Reading:
    num_feat, in_ch = _shape(state, "conv_first.weight", 4)[:2]
    _three_channels("this MSRResNet", in_ch, _shape(state, "conv_last.weight", 4)[0])
    blocks = _indices(state)
    up1 = _shape(state, "upconv1.weight", 4)[0]
    if "upconv2.weight" in state:
        scale = 4
    else:
        scale = math.isqrt(up1 // num_feat) if up1 % num_feat == 0 else 0
        if scale not in (2, 3) or scale * scale * num_feat != up1:
            raise ImportFailure(f"upconv1 returns {up1} channels for {num_feat} features: neither x2 ({4 * num_feat}) "
                                f"nor x3 ({9 * num_feat}), and there is no upconv2 (x4)")
    return _sr("msrresnet", scale, {"num_feat": num_feat, "num_block": len(blocks)})


def _read_edsr(state: State) -> Reading:
    num_feat, in_ch = _shape(state, "conv_first.weight", 4)[:2]
    _three_channels("this EDSR", in_ch, _shape(state, "conv_last.weight", 4)[0])
    blocks = _indices(state)
    ups = sorted({int(m.group(1)) for k in state if (m := re.match(r"upsample\.(\d+)\.weight\Z", k))})
    outs = [_shape(state, f"upsample.{i}.weight", 4)[0] for i in ups]
    if ups != list(range(0, 2 * len(ups), 2)):
        raise ImportFailure(f"upsample convs at {ups}; EDSR has one every other index (conv, pixel shuffle)")
    if outs == [9 * num_feat]:
        scale = 3
    elif outs and all(o == 4 * num_feat for o in outs):
        scale = 2 ** len(outs)
    else:
        raise ImportFailure(f"upsample convs return {outs} channels for {num_feat} features: EDSR's are 4x (x2 each) "
                            "or one 9x (x3)")
    # res_scale is not in the keys: the EDSR paper's large model (256 features, 32 blocks) scales residuals by 0.1
    large = (num_feat, len(blocks)) == (256, 32)
    res_scale = 0.1 if large else 1.0
    notes = [f"res_scale {res_scale:g}, img_range 255 and BasicSR's DIV2K rgb_mean are not in the keys: "
             f"{'the EDSR paper large model (256 x 32) uses 0.1' if large else 'res_scale 1 as BasicSR EDSR_M'}"]
    return _sr("edsr", scale, {"num_feat": num_feat, "num_block": len(blocks), "res_scale": res_scale}, notes)


def _norm_of(state: State, norm_key: str, conv_key: str) -> tuple[str, tuple[str, ...]]:
    """pytorch-CycleGAN norm from the first norm layer: batch (affine + running stats, convs without bias) or
    instance (no affine, no stats, convs with bias); stale instance-norm statistics of old files are dropped."""
    if f"{norm_key}.weight" in state and f"{norm_key}.running_mean" in state:
        if f"{conv_key}.bias" in state:
            raise ImportFailure(f"{conv_key} has a bias next to batch norm {norm_key}: not pytorch-CycleGAN's layout")
        return "batch", ()
    if f"{norm_key}.weight" in state:
        raise ImportFailure(f"{norm_key} has affine weights without running statistics: instance norm with affine "
                            "parameters is not pytorch-CycleGAN's default (--norm instance has none)")
    if f"{conv_key}.bias" not in state:
        raise ImportFailure(f"no norm parameters and no conv bias at {conv_key}: pytorch-CycleGAN's --norm none "
                            "layout, which ganserve's networks do not have")
    stale = tuple(k for k in state if re.search(r"\.(running_mean|running_var|num_batches_tracked)\Z", k))
    return "instance", stale


def _rename_cyclegan_resnet(state: State) -> State:
    """pytorch-CycleGAN's ResnetBlock ``conv_block`` is ganserve's ``body`` (same indices without dropout; with
    dropout, its conv/norm at 6/7 are ganserve's 5/6: dropout is identity at inference)."""
    dropout = any(re.match(r"model\.\d+\.conv_block\.6\.weight\Z", k) and v.ndim == 4 for k, v in state.items())
    moved = {"6": "5", "7": "6"} if dropout else {}
    out: State = {}
    for key, value in state.items():
        if (m := re.match(r"(model\.\d+)\.conv_block\.(\d+)\.(.+)\Z", key)):
            out[f"{m.group(1)}.body.{moved.get(m.group(2), m.group(2))}.{m.group(3)}"] = value
        else:
            out[key] = value
    return out


def _translation(spec: dict[str, Any], hyper: dict[str, Any], notes: list[str], drop: tuple[str, ...],
                 crop: int = 256) -> Reading:
    notes = [*notes, "inference in eval mode: batch norm uses the file's running statistics and dropout is off "
             "(pytorch-CycleGAN's test.py --eval); RGB in [-1, 1] inside, [0, 1] at the model's edges"]
    if drop:
        notes.append(f"{len(drop)} stale instance-norm statistics keys dropped (as pytorch-CycleGAN's loader does)")
    return Reading("pix2pix", {"generator": spec, "crop": crop}, hyper, notes=notes, drop=drop)


def _read_cyclegan_resnet(state: State) -> Reading:
    ngf, in_ch = _shape(state, "model.1.weight", 4)[:2]
    blocks = sorted({int(m.group(1)) for k in state if (m := re.match(r"model\.(\d+)\.body\.", k))})
    if not blocks or blocks != list(range(10, 10 + len(blocks))):
        raise ImportFailure(f"residual blocks at model.{blocks[:3]}...; ResnetGenerator's run model.10 .. model.N")
    n = len(blocks)
    last = f"model.{17 + n}.weight"
    out_ch = _shape(state, last, 4)[0]
    _three_channels("this ResnetGenerator", in_ch, out_ch)
    norm, stale = _norm_of(state, "model.2", "model.1")
    spec = {"type": "resnet-generator", "ngf": ngf, "blocks": n, "norm": norm, "residual": False}
    hyper = {"ngf": ngf, "blocks": n, "norm": norm, "in_channels": in_ch, "out_channels": out_ch}
    return _translation(spec, hyper, [], stale)


# pytorch-CycleGAN's U-Net nests one block in the next: the outermost block's Sequential holds its child at index 1,
# every other block at index 3, so level L's keys start model.model. (L = 0), model.model.1.model. (L = 1),
# model.model.1.model.3.model. (L = 2), ...
_UNET_KEY = re.compile(r"model\.model(?:\.1\.model((?:\.3\.model)*))?\.(\d+)\.(\w+)\Z")


def _unet_prefix(level: int) -> str:
    return "model.model." + ("1.model." + "3.model." * (level - 1) if level else "")


def _read_pix2pix_unet(state: State) -> Reading:
    levels: dict[int, set[int]] = {}
    for key in state:
        if (m := _UNET_KEY.match(key)):
            level = 0 if m.group(1) is None else 1 + m.group(1).count(".3.model")
            levels.setdefault(level, set()).add(int(m.group(2)))
    depth = len(levels)
    if sorted(levels) != list(range(depth)) or depth < 2:
        raise ImportFailure(f"U-Net levels {sorted(levels)} are not nested 0..N")
    widths = []
    for level in range(depth):
        down = f"{_unet_prefix(level)}{0 if level == 0 else 1}.weight"
        widths.append(_shape(state, down, 4)[0])
    in_ch = _shape(state, f"{_unet_prefix(0)}0.weight", 4)[1]
    out_ch = _shape(state, f"{_unet_prefix(0)}3.weight", 4)[1]  # ConvTranspose2d weights are [in, out, k, k]
    _three_channels("this U-Net", in_ch, out_ch)
    ngf = widths[0]
    max_mult = max(widths) // ngf
    want = [ngf * min(2**i, max_mult) for i in range(depth)]
    if widths != want or max(widths) % ngf:
        raise ImportFailure(f"U-Net widths {widths} per level are not pix2pix's ngf x min(2^level, {max_mult}) = "
                            f"{want}")
    norm, stale = _norm_of(state, f"{_unet_prefix(1)}2", f"{_unet_prefix(0)}0")
    spec = {"type": "unet", "depth": depth, "ngf": ngf, "max_mult": max_mult, "norm": norm, "dropout": 0.5}
    hyper = {"depth": depth, "input_side": 2**depth, "ngf": ngf, "max_mult": max_mult, "norm": norm,
             "in_channels": in_ch, "out_channels": out_ch}
    return _translation(spec, hyper, [f"U-Net depth {depth}: input sides must be multiples of {2**depth} "
                                      f"(unet_{2**depth})"], stale, crop=max(256, 2**depth))


FORMATS: tuple[Format, ...] = (
    Format(
        "realesrgan", "Real-ESRGAN / BasicSR RRDBNet (RealESRGAN_x4plus, _x2plus, _anime_6B, BasicSR ESRGAN)",
        ("conv_first.weight", "body.0.rdb1.conv1.weight", "conv_body.weight", "conv_up1.weight", "conv_up2.weight",
         "conv_hr.weight", "conv_last.weight"),
        (r"(conv_first|conv_body|conv_up1|conv_up2|conv_hr|conv_last)\.(weight|bias)",
         r"body\.\d+\.rdb[123]\.conv[1-5]\.(weight|bias)"),
        _read_rrdbnet),
    Format(
        "esrgan", "original ESRGAN release (RRDB_ESRGAN_x4.pth, model.N keys)",
        ("model.0.weight", "model.1.sub.0.RDB1.conv1.0.weight", "model.3.weight", "model.6.weight", "model.8.weight",
         "model.10.weight"),
        (r"model\.(0|3|6|8|10)\.(weight|bias)", r"model\.1\.sub\.\d+\.RDB[123]\.conv[1-5]\.0\.(weight|bias)",
         r"model\.1\.sub\.\d+\.(weight|bias)"),
        _read_esrgan_old, _rename_esrgan_old,
        "model.0 -> conv_first; model.1.sub.N.RDBk.convj.0 -> body.N.rdbk.convj; model.1.sub.<blocks> -> conv_body; "
        "model.3 -> conv_up1; model.6 -> conv_up2; model.8 -> conv_hr; model.10 -> conv_last"),
    Format(
        "srvgg", "Real-ESRGAN SRVGGNetCompact (realesr-general-x4v3, realesr-animevideov3)",
        ("body.0.weight", "body.0.bias", "body.2.weight"),
        (r"body\.\d+\.(weight|bias)",),
        _read_srvgg),
    Format(
        "msrresnet", "BasicSR MSRResNet (SRResNet without batch norm)",
        ("conv_first.weight", "body.0.conv1.weight", "upconv1.weight", "conv_hr.weight", "conv_last.weight"),
        (r"(conv_first|upconv1|upconv2|conv_hr|conv_last)\.(weight|bias)", r"body\.\d+\.conv[12]\.(weight|bias)"),
        _read_msrresnet),
    Format(
        "edsr", "BasicSR EDSR",
        ("conv_first.weight", "body.0.conv1.weight", "conv_after_body.weight", "upsample.0.weight", "conv_last.weight"),
        (r"(conv_first|conv_after_body|conv_last)\.(weight|bias)", r"body\.\d+\.conv[12]\.(weight|bias)",
         r"upsample\.\d+\.(weight|bias)"),
        _read_edsr),
    Format(
        "cyclegan-resnet", "pytorch-CycleGAN-and-pix2pix ResnetGenerator (latest_net_G.pth, resnet_6blocks / _9blocks)",
        ("model.1.weight", "model.4.weight", "model.7.weight", "model.10.conv_block.1.weight"),
        (rf"model\.\d+\.({_NORM_PARAMS})", rf"model\.\d+\.conv_block\.\d+\.({_NORM_PARAMS})"),
        _read_cyclegan_resnet, _rename_cyclegan_resnet,
        "model.N.conv_block.j -> model.N.body.j (with dropout: conv_block.6/7 -> body.5/6); other keys as they are"),
    Format(
        "pix2pix-unet", "pytorch-CycleGAN-and-pix2pix UnetGenerator (latest_net_G.pth, unet_128 / unet_256)",
        ("model.model.0.weight", "model.model.1.model.1.weight", "model.model.3.weight"),
        (rf"model\.model(\.1\.model(\.3\.model)*)?\.\d+\.({_NORM_PARAMS})",),
        _read_pix2pix_unet),
)
BY_NAME = {f.name: f for f in FORMATS}
FORMAT_CHOICES = ("auto", *BY_NAME)


def _few(keys: list[str], n: int = 4) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def _difference(missing: list[str], unexpected: list[str]) -> str:
    parts = [f"missing {_few(missing)}"] if missing else []
    parts += [f"unexpected {_few(unexpected)}"] if unexpected else []
    return "; ".join(parts) or "no key differs"


def _nearest(keys: list[str]) -> tuple[Format, list[str], list[str]]:
    """The format whose required keys the file has most of (then: whose grammar most keys follow)."""

    def score(fmt: Format) -> tuple[float, float]:
        missing, unexpected = fmt.mismatch(keys)
        return (1 - len(missing) / len(fmt.required), 1 - len(unexpected) / max(len(keys), 1))

    best = max(FORMATS, key=score)
    return (best, *best.mismatch(keys))


def recognise(state: State, wanted: str = "auto") -> Format:
    """The format whose keys the file has: ``wanted`` checked against the keys, or the one that fits (auto)."""
    keys = list(state)
    fitting = [f for f in FORMATS if f.mismatch(keys) == ([], [])]
    if wanted != "auto":
        if wanted not in BY_NAME:
            raise ImportFailure(f"unknown format {wanted!r}; known: {', '.join(FORMAT_CHOICES)}")
        fmt = BY_NAME[wanted]
        missing, unexpected = fmt.mismatch(keys)
        if missing or unexpected:
            looks = fitting[0].name if fitting else f"nothing known (nearest: {_nearest(keys)[0].name})"
            raise ImportFailure(f"--format {wanted} contradicts the keys ({_difference(missing, unexpected)}); "
                                f"they look like {looks}")
        return fmt
    if fitting:
        return fitting[0]
    fmt, missing, unexpected = _nearest(keys)
    raise ImportFailure(f"unknown layout ({len(keys)} tensors); nearest known format: {fmt.name} "
                        f"({fmt.title}): {_difference(missing, unexpected)}")


# -- fitting the weights into the project's network --------------------------------------------------------------------
def _fit(generator: torch.nn.Module, state: State, what: str) -> list[str]:
    """Load ``state`` strictly into ``generator``; a one-line error naming the first keys or shapes that differ.
    Returns notes (e.g. batch-norm counters that old files lack, filled with 0)."""
    own = generator.state_dict()
    notes = []
    counters = [k for k in own if k.endswith(".num_batches_tracked") and k not in state]
    if counters:  # files from PyTorch < 0.4.1 have no batch-norm step counters; eval mode never reads them
        state = {**state, **{k: torch.zeros_like(own[k]) for k in counters}}
        notes.append(f"{len(counters)} batch-norm num_batches_tracked counters absent from the file, set to 0")
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise ImportFailure(f"the keys do not fit {what}: {_difference(missing, unexpected)}")
    wrong = [k for k in own if tuple(own[k].shape) != tuple(state[k].shape)]
    if wrong:
        k = wrong[0]
        raise ImportFailure(f"{k} has shape {list(state[k].shape)} in the file; {what} needs {list(own[k].shape)}"
                            + (f" (+{len(wrong) - 1} more of the wrong shape)" if len(wrong) > 1 else ""))
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ImportFailure(f"{_few(bad, 2)} hold NaN or infinite values")
    dtypes = sorted({str(v.dtype).removeprefix("torch.") for v in state.values() if v.is_floating_point()})
    if dtypes != ["float32"]:
        notes.append(f"weights stored as {', '.join(dtypes)}, loaded as the network's float32")
    try:
        generator.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ImportFailure(f"the weights do not load into {what} ({first_line(exc)})") from exc
    return notes


@dataclass
class Imported:
    """An imported file: the application built around its weights, and what the checkpoint records about it."""

    app: Any
    format: Format
    reading: Reading
    facts: dict[str, Any]


def build_import(path: str | Path, wanted: str = "auto") -> Imported:
    """Read ``path``, recognise its format, build the hosting application and load the weights strictly into its
    generator (nothing is written). The other networks of the application keep their seeded initialisation."""
    path = Path(path)
    state, where = read_tensors(path)
    try:
        fmt = recognise(state, wanted)
    except ImportFailure as exc:
        raise ImportFailure(f"{path.name}: {exc}") from exc
    try:
        renamed = fmt.rename(state)
        reading = fmt.read(renamed)
    except ImportFailure as exc:
        raise ImportFailure(f"{path.name} ({fmt.name}): {exc}") from exc
    renamed = {k: v for k, v in renamed.items() if k not in reading.drop}
    torch.manual_seed(0)  # what the file does not hold (a discriminator) starts at a seeded initialisation
    app = registry.build(reading.application, merge_config(reading.application, reading.config))
    generator = app.generator
    spec = getattr(generator, "network_spec", {"type": type(generator).__name__})
    what = f"{spec['type']}({', '.join(f'{k}={v}' for k, v in reading.hyper.items())})"
    try:
        load_notes = _fit(generator, renamed, what)
    except ImportFailure as exc:
        raise ImportFailure(f"{path.name} ({fmt.name}): {exc}") from exc
    app.eval()
    export = app.export_spec()
    gen_keys = {f"generator.{k}" for k in generator.state_dict()}
    seeded = sorted({k.split(".")[0] for k in app.state_dict() if k not in gen_keys})
    needs = {
        "task": export.task,
        "value_range": list(export.inputs[0].value_range or []),
        "channels": reading.channels,
        "layout": export.inputs[0].layout,
        "scale": export.scale,
        "spatial_multiple": export.spatial_multiple,
        "tile_safe": export.tile_safe,
    }
    facts = {
        "file": path.name,
        "sha256": file_sha256(path),
        "bytes": path.stat().st_size,
        "format": fmt.name,
        "format_title": fmt.title,
        "weights_from": where or "the top level of the file",
        "tensors": len(state),
        "hyper_parameters": reading.hyper,
        "application": reading.application,
        "network": dict(spec),
        "key_map": fmt.key_map,
        "not_from_file": [f"{name}: seeded random initialisation (seed 0), not in the file; inference never uses it"
                          for name in seeded],
        "needs": needs,
        "notes": [*reading.notes, *load_notes],
    }
    return Imported(app, fmt, reading, facts)


def checkpoint_payload(imported: Imported) -> dict[str, Any]:
    """The checkpoint `ganserve train` would write for these weights, marked imported (step 0, no optimizer)."""
    app, facts = imported.app, imported.facts
    return {
        "model": app.model_name,
        "config": config_dict(app.config),
        "state": {k: v.detach().cpu() for k, v in app.state_dict().items()},
        "optim": {},
        "step": 0,
        "metrics": {
            "imported": facts,
            "data": f"imported: {facts['file']} ({facts['format']}: {facts['format_title']}), no training run here",
            "interrupted": False,
            "world_size": 1,
        },
        "commit": git_commit(),
    }


def _new_dirs(path: Path) -> list[Path]:
    """The folders ``path.mkdir(parents=True)`` would create, outermost first."""
    return [p for p in reversed([path, *path.parents]) if not p.exists()]


@contextmanager
def _os_errors(path: str | Path, doing: str) -> Iterator[None]:
    """An OSError of this step (full disk, no permission, a file in the path), raw or in the export's RepositoryError,
    as a one-line ImportFailure naming the user's path and the OS reason: exit 2, no traceback, no staging path."""
    try:
        yield
    except (OSError, RepositoryError) as exc:
        cause = exc if isinstance(exc, OSError) else exc.__cause__
        if not isinstance(cause, OSError):
            raise
        reason = cause.strerror or _first_line(cause)
        raise ImportFailure(f"{path}: {doing} failed ({reason}); nothing was written") from exc


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse an OUT that exists (without --overwrite) or cannot be created, before the slow part."""
    if out.exists() and not overwrite:
        raise ImportFailure(f"{out}: already exists; pass --overwrite to replace it")
    if out.exists() and not out.is_dir():
        raise ImportFailure(f"{out}: exists and is not a folder")
    anchor = next((p for p in [out.parent, *out.parent.parents] if p.exists()), None)
    if anchor is not None and not anchor.is_dir():
        raise ImportFailure(f"{out}: cannot create the output folder ({anchor} is a file, not a folder)")
    if anchor is not None and not os.access(anchor, os.W_OK | os.X_OK):
        raise ImportFailure(f"{out}: cannot create the output folder ({anchor}: {os.strerror(errno.EACCES)})")


def _publish(staged_repo: Path, repo: Path, name: str, version: int) -> Path:
    """Move an export staged in ``staged_repo`` into ``repo`` through the repository's own all-or-nothing write."""
    staged = staged_repo / name
    version_dir = staged / str(version)
    version_files = {str(p.relative_to(version_dir)): p.read_bytes() for p in sorted(version_dir.rglob("*"))
                     if p.is_file()}
    model_files = {p.name: p.read_bytes().decode("utf-8") for p in sorted(staged.iterdir()) if p.is_file()}
    return write_model(repo, name, version, version_files, model_files)


def _roll_back(out: Path, old: Path, moved_old: bool, moved_new: bool, created: list[Path]) -> None:
    """Undo what a failed import did: its OUT removed, the previous OUT put back, the folders it created removed."""
    if moved_new:
        shutil.rmtree(out, ignore_errors=True)
    if moved_old:
        try:
            os.replace(old, out)
        except OSError as exc:
            raise ImportFailure(f"{out}: the previous folder could not be put back ({exc.strerror or exc}); "
                                f"it is kept at {old}") from exc
    for folder in sorted(set(created), key=lambda p: len(p.parts), reverse=True):
        try:
            folder.rmdir()
        except OSError:
            continue


def import_weights(
    path: str | Path,
    name: str,
    *,
    fmt: str = "auto",
    out: str | Path | None = None,
    overwrite: bool = False,
    export_repo: str | Path | None = None,
    progress: bool = True,
) -> tuple[Path, Imported, Path | None]:
    """Import ``path`` as ``out/checkpoint.pt`` (default ``runs/import/NAME``) with ``out/import.json`` beside it;
    with ``export_repo`` also export it there as model ``name``. Returns (checkpoint, what was imported, the
    exported version folder or None).

    All or nothing: the checkpoint folder and the export are staged; then OUT is renamed into place and the staged
    export moved into the repository (itself all or nothing); a failure at any step, an OS error included, undoes
    the steps before it and ends in a one-line ImportFailure (or the repository's RepositoryError)."""
    check_model_name(name)
    out = Path(out) if out else DEFAULT_OUT / name
    with _os_errors(out, "checking the output folder"):
        _check_out(out, overwrite)
    version = 0
    if export_repo is not None:
        export_repo = Path(export_repo)
        with _os_errors(export_repo, "checking the model repository"):
            version = check_target(export_repo, name, None, False)[1]
    with _os_errors(path, "reading the weights file"):
        imported = build_import(path, fmt)
    payload = checkpoint_payload(imported)
    created = _new_dirs(out.parent) + (_new_dirs(export_repo) if export_repo is not None else [])
    old = out.with_name(f".old-{out.name}")
    stage: Path | None = None
    staged_repo: Path | None = None  # a scratch repository the export is written to first
    version_dir: Path | None = None
    moved_old = moved_new = False
    try:
        with _os_errors(out, "creating the output folder"):
            out.parent.mkdir(parents=True, exist_ok=True)
            stage = Path(tempfile.mkdtemp(prefix=f".import-{out.name}-", dir=out.parent))
        with _os_errors(out, "writing the checkpoint"):
            save_checkpoint(stage / CHECKPOINT, payload)
            record = {"checkpoint": CHECKPOINT, "model": payload["model"], "config": payload["config"],
                      "created": payload.get("created"), **imported.facts}
            (stage / RECORD).write_text(json.dumps(record, indent=2) + "\n")
        if export_repo is not None:
            if progress:
                print(f"import: exporting {name} into {export_repo}", file=sys.stderr, flush=True)
            with _os_errors(export_repo, "exporting"):
                staged_repo = Path(tempfile.mkdtemp(prefix=f".import-{out.name}-export-", dir=out.parent))
                export_checkpoint(stage / CHECKPOINT, staged_repo / "repo", name=name, version=version,
                                  progress=progress)
        with _os_errors(out, "renaming the checkpoint folder into place"):
            shutil.rmtree(old, ignore_errors=True)
            if out.exists():
                os.replace(out, old)
                moved_old = True
            os.replace(stage, out)
            moved_new = True
        if staged_repo is not None and export_repo is not None:
            with _os_errors(export_repo, "exporting"):
                version_dir = _publish(staged_repo / "repo", export_repo, name, version)
    except BaseException:
        for folder in (stage, staged_repo):
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
        _roll_back(out, old, moved_old, moved_new, created)
        raise
    if staged_repo is not None:
        shutil.rmtree(staged_repo, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return out / CHECKPOINT, imported, version_dir


def add_commands(subparsers: Any, name: str) -> None:
    """Add the ``import`` subcommand (ganserve.pipeline.cli maps it here)."""
    p = subparsers.add_parser(
        name,
        help="import weights trained elsewhere (Real-ESRGAN, ESRGAN, BasicSR, pytorch-CycleGAN) as a checkpoint",
        description="Read FILE (.pth/.pt through torch.load weights_only=True, never running code; or .safetensors), "
        "recognise its layout and hyper-parameters from key names and shapes, load it strictly into ganserve's own "
        "network and write OUT/checkpoint.pt (a ganserve checkpoint: `ganserve export` takes it) and OUT/import.json "
        f"(where it came from and what it needs). Formats: {', '.join(f'{f.name} = {f.title}' for f in FORMATS)}.",
    )
    p.add_argument("file", metavar="FILE", help="the weights file (.pth, .pt or .safetensors)")
    p.add_argument("--name", required=True, help="model name (the export's name; default OUT is runs/import/NAME)")
    p.add_argument("--format", dest="fmt", choices=FORMAT_CHOICES, default="auto",
                   help="the file's layout (default auto: recognised from the keys); a format that contradicts the "
                        "keys is an error")
    p.add_argument("--out", metavar="DIR", help="output folder (default runs/import/NAME)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.add_argument("--export", dest="export_repo", metavar="REPO",
                   help="also export it into this model repository as NAME (as `ganserve export` would)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=_run_import)


def _run_import(args: argparse.Namespace) -> int:
    checkpoint, imported, version_dir = import_weights(
        args.file, args.name, fmt=args.fmt, out=args.out, overwrite=args.overwrite, export_repo=args.export_repo,
        progress=not args.quiet)
    facts = imported.facts
    hyper = ", ".join(f"{k}={v}" for k, v in facts["hyper_parameters"].items())
    print(f"{checkpoint}  ({facts['format']}: {hyper}; application {facts['application']}, "
          f"network {facts['network']['type']}; sha256 {facts['sha256'][:12]})")
    if version_dir is not None:
        print(version_dir)
    else:
        print(f"next: ganserve export {checkpoint} --repo REPO --name {args.name}")
    return 0
