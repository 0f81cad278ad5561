"""What an application declares so the exporter needs no per-model code.

It lives in the torch-free core because it is the contract between two layers: training writes it (each
application's ``export_spec()``), export reads it. Torch appears only in type hints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np

from ganserve.core.contract import TensorSpec

if TYPE_CHECKING:
    import torch

# A predictor maps named numpy inputs (batched, float32) to named numpy outputs; torch and onnxruntime both
# get wrapped into one, so the same evaluation measures either.
Predictor = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass
class ExportSpec:
    module: torch.nn.Module  # inference network in eval mode: forward(*inputs in `inputs` order) -> outputs
    example_inputs: tuple[torch.Tensor, ...]  # batched example used for tracing
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    task: str  # a descriptive label for the model card (roles, not the task, drive serving)
    architecture: str
    scale: int = 1
    spatial_multiple: int = 1
    tile_safe: bool = True
    dynamic_spatial: bool = True  # H/W axes dynamic (fully convolutional)
    # Real-data inputs for parity checks, at >= 2 spatial sizes where dynamic_spatial: each a dict name -> array.
    parity_inputs: list[dict[str, np.ndarray]] = field(default_factory=list)
    # Ground-truth outputs of parity_inputs (one dict per entry) where known: stored in the reference set so the
    # server can measure the quality a faster precision loses (PSNR drop) without torch.
    reference_targets: list[dict[str, np.ndarray]] = field(default_factory=list)
    # Held-out quality of any predictor, e.g. {"psnr_y": 24.1, "ssim_y": 0.71, "bicubic_psnr_y": 23.0}.
    evaluate: Callable[[Predictor], dict[str, float]] | None = None
    quality_key: str = ""  # the headline metric in evaluate()'s dict (higher is better)
    # int8 calibration batches (built-in training images), each a dict name -> array.
    calibration: Callable[[], Iterable[dict[str, np.ndarray]]] | None = None
    card_extra: dict[str, Any] = field(default_factory=dict)  # training data/budget facts for the model card
