"""The model-repository contract, shared by export (writes) and serving (reads). Never imports torch.

Layout (NVIDIA Triton's, plus two ganserve files)::

    <repo>/<name>/config.pbtxt            Triton ModelConfig (onnxruntime backend)
    <repo>/<name>/model_card.json         ModelCard below, one per model (describes the latest export)
    <repo>/<name>/<version>/model.onnx    named inputs/outputs, dynamic batch (and H/W when convolutional)
    <repo>/<name>/<version>/reference.npz reference inputs ("in:<tensor>") and fp32 outputs ("out:<tensor>")
                                          (+ "truth:<tensor>"; further cases as "case<k>/in:<tensor>" ...)
    <repo>/<name>/<version>/model.<precision>.onnx  optional faster variants (int8, fp16) the server may pick

The ONNX file's metadata_props carry the same facts under ``ganserve.*`` keys (see ``onnx_metadata``), so a
model.onnx copied alone still says what it is.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ganserve.core.errors import RepositoryError
from ganserve.core.precisions import PRECISIONS

CARD_FILE = "model_card.json"
CONFIG_FILE = "config.pbtxt"
MODEL_FILE = "model.onnx"
REFERENCE_FILE = "reference.npz"
CARD_SCHEMA_VERSION = 1


def variant_file(precision: str) -> str:
    """File name of a precision variant beside model.onnx in a version folder (e.g. model.int8.onnx)."""
    return f"model.{precision}.onnx"


# A card's task is a descriptive label (super_resolution, derain, ...): what serves a model is the roles of its
# tensors, so any short name will do.
_TASK_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Triton data types of the tensors ganserve models use, with their numpy names.
DTYPES = {"FP32": "float32", "FP16": "float16", "INT64": "int64", "INT32": "int32", "UINT8": "uint8", "BOOL": "bool"}
# Roles tell the image API what a tensor is, so serving needs no per-model code.
ROLES = ("image", "condition", "mask", "probabilities", "logits", "latent", "tensor")


@dataclass
class TensorSpec:
    """One named input or output. ``shape`` excludes the batch axis; -1 marks a dynamic axis."""

    name: str
    shape: list[int]
    dtype: str = "FP32"
    role: str = "image"
    layout: str = "NCHW"
    value_range: list[float] | None = None  # e.g. [-1, 1] for images
    labels: list[str] | None = None  # for class axes (classification) or condition choices (age groups)
    default: str | None = None  # a condition's choice when a request names none; None = the request must name one

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise RepositoryError(f"tensor {self.name!r}: unknown dtype {self.dtype!r} (one of {sorted(DTYPES)})")
        if self.role not in ROLES:
            raise RepositoryError(f"tensor {self.name!r}: unknown role {self.role!r} (one of {ROLES})")
        if self.default is not None:
            self._check_default()
        self.shape = [int(d) for d in self.shape]
        if self.value_range is not None:
            self.value_range = [float(v) for v in self.value_range]

    def _check_default(self) -> None:
        """A default belongs to a condition input and is one of its labels (or an index when it has none)."""
        if self.role != "condition":
            raise RepositoryError(f"tensor {self.name!r}: only a condition input has a default (role {self.role!r})")
        self.default = str(self.default)
        if self.labels and self.default not in self.labels:
            raise RepositoryError(f"tensor {self.name!r}: default {self.default!r} is not one of {self.labels}")
        if not self.labels and not self.default.isdigit():
            raise RepositoryError(f"tensor {self.name!r}: default {self.default!r} must be an index (no labels)")

    @property
    def numpy_dtype(self) -> str:
        return DTYPES[self.dtype]


@dataclass
class ModelCard:
    """What a served model is, how to feed it, and how good it measured at export."""

    name: str
    task: str
    architecture: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    version: int = 1
    precision: str = "fp32"  # fp32 | fp16 | int8
    parameters: int = 0
    scale: int = 1  # output size / input size (4 for a x4 SR model)
    spatial_multiple: int = 1  # H and W must be multiples of this; serving pads and crops back
    tile_safe: bool = True  # no statistics over the whole image (no instance norm), so tiling is exact
    tile_size: int = 0  # preferred serving tile (input pixels); 0 = the server's default
    tile_overlap: int = 0  # overlap between tiles (input pixels); 0 = the server's default
    max_batch_size: int = 8
    color: str = "RGB"
    training: dict[str, Any] = field(default_factory=dict)  # data, budget, steps, config, command
    metrics: dict[str, Any] = field(default_factory=dict)  # quality at export, with baselines
    parity: dict[str, Any] = field(default_factory=dict)  # max abs error vs torch, sizes checked
    source: dict[str, Any] = field(default_factory=dict)  # checkpoint sha256, commit, config hash
    notes: list[str] = field(default_factory=list)
    # working memory of one run per "Provider/precision", measured at export (ganserve.core.memory_cost)
    memory: dict[str, Any] = field(default_factory=dict)
    # self-ensemble (8 flips and rotations) measured at export: held-out gain and latency cost, or why it does not
    # apply ({"applies": false, "why": ...}); {} in cards exported before it was measured
    ensemble: dict[str, Any] = field(default_factory=dict)
    schema_version: int = CARD_SCHEMA_VERSION

    def __post_init__(self) -> None:
        if not isinstance(self.task, str) or not _TASK_RE.match(self.task):
            raise RepositoryError(f"model {self.name!r}: task {self.task!r} must be a short label (letters, digits, "
                                  "'_', '-', '.'; at most 64)")
        if not self.inputs or not self.outputs:
            raise RepositoryError(f"model {self.name!r}: a model card needs at least one input and one output")
        self.inputs = [t if isinstance(t, TensorSpec) else TensorSpec(**t) for t in self.inputs]
        self.outputs = [t if isinstance(t, TensorSpec) else TensorSpec(**t) for t in self.outputs]
        if self.precision not in PRECISIONS:
            raise RepositoryError(f"model {self.name!r}: unknown precision {self.precision!r}")

    # -- convenience for the image API ---------------------------------------------------------------
    def input_by_role(self, role: str) -> TensorSpec | None:
        """The first input with this role, or None."""
        return next((t for t in self.inputs if t.role == role), None)

    def output_by_role(self, *roles: str) -> TensorSpec | None:
        """The first output with one of these roles, or None."""
        return next((t for t in self.outputs if t.role in roles), None)

    def conditions(self) -> list[TensorSpec]:
        """The condition inputs, in card order: a request names each by its tensor name."""
        return [t for t in self.inputs if t.role == "condition"]

    # -- (de)serialisation ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelCard":
        known = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as exc:
            raise RepositoryError(f"malformed model card: {exc}") from exc

    @classmethod
    def load(cls, path: str | Path) -> "ModelCard":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise RepositoryError(f"{path}: no model card") from exc
        except (OSError, ValueError) as exc:
            raise RepositoryError(f"{path}: unreadable model card ({exc})") from exc
        if not isinstance(data, dict):
            raise RepositoryError(f"{path}: a model card is a JSON object")
        return cls.from_dict(data)


# -- ONNX metadata_props ------------------------------------------------------------------------------
META_PREFIX = "ganserve."


def onnx_metadata(card: ModelCard) -> dict[str, str]:
    """The key/value pairs written into model.onnx's metadata_props."""
    image_in = card.input_by_role("image") or card.inputs[0]
    return {
        META_PREFIX + "task": card.task,
        META_PREFIX + "architecture": card.architecture,
        META_PREFIX + "layout": f"{image_in.layout} {image_in.dtype}",
        META_PREFIX + "value_range": json.dumps(image_in.value_range),
        META_PREFIX + "scale": str(card.scale),
        META_PREFIX + "spatial_multiple": str(card.spatial_multiple),
        META_PREFIX + "tile_safe": str(card.tile_safe).lower(),
        META_PREFIX + "precision": card.precision,
        META_PREFIX + "checkpoint_sha256": str(card.source.get("checkpoint_sha256", "")),
        META_PREFIX + "commit": str(card.source.get("commit", "")),
        META_PREFIX + "config_hash": str(card.source.get("config_hash", "")),
        META_PREFIX + "card": json.dumps(card.to_dict()),
    }


# -- config.pbtxt ---------------------------------------------------------------------------------------
def _dims(shape: list[int]) -> str:
    return "[ " + ", ".join(str(d) for d in shape) + " ]"


def _tensor_block(t: TensorSpec) -> str:
    return f'  {{\n    name: "{t.name}"\n    data_type: TYPE_{t.dtype}\n    dims: {_dims(t.shape)}\n  }}'


def triton_config(card: ModelCard) -> str:
    """A config.pbtxt that NVIDIA Triton's onnxruntime backend accepts (batch axis implicit, -1 = dynamic).

    The queue delay is 0: a lone request runs at once, and requests that arrive while a run is busy are batched
    together for the next run, so batching costs no latency at low load (measured on 2 cores: a 2 ms delay added
    ~10 ms to a lone 64x64 request, and convolution-heavy SR gains little from waiting for a batch). One
    instance: the server runs a model's instance_group count at once (its streams) unless --streams says otherwise.
    """
    preferred = [b for b in (2, 4, 8) if b <= card.max_batch_size]
    lines = [
        f'name: "{card.name}"',
        'platform: "onnxruntime_onnx"',
        f"max_batch_size: {card.max_batch_size}",
        "version_policy: { latest: { num_versions: 1 } }",
        "input [\n" + ",\n".join(_tensor_block(t) for t in card.inputs) + "\n]",
        "output [\n" + ",\n".join(_tensor_block(t) for t in card.outputs) + "\n]",
        "dynamic_batching {\n"
        f"  preferred_batch_size: {_dims(preferred)}\n"
        "  max_queue_delay_microseconds: 0\n"
        "}",
        "instance_group [\n  {\n    count: 1\n    kind: KIND_CPU\n  }\n]",
    ]
    return "\n".join(lines) + "\n"


# -- repository layout -----------------------------------------------------------------------------------
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_model_name(name: str) -> str:
    if not _NAME_RE.match(name or ""):
        raise RepositoryError(f"invalid model name {name!r}: use letters, digits, '_', '-', '.' (max 128)")
    return name


def model_versions(model_dir: str | Path) -> list[int]:
    """Numeric version folders of a model that hold a model.onnx, ascending."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit() and (p / MODEL_FILE).exists())


def list_models(repo: str | Path) -> list[str]:
    """Model folders in a repository (those with a config.pbtxt or a model card), sorted."""
    repo = Path(repo)
    if not repo.is_dir():
        raise RepositoryError(f"{repo}: model repository not found")
    return sorted(
        p.name for p in repo.iterdir() if p.is_dir() and not p.name.startswith(".") and ((p / CONFIG_FILE).exists() or (p / CARD_FILE).exists())
    )
