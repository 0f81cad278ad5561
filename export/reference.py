"""reference.npz: the small set the server checks a faster provider or precision against, without torch.

Case 0 is stored as "in:<tensor>", "out:<tensor>" (fp32 torch outputs) and, where the model knows it, "truth:<tensor>"
(the held-out ground truth, so the server can measure a PSNR drop); further cases as "case<k>/in:<tensor>" etc.
Each case is one of the spec's real held-out inputs (at its own spatial size), at most REFERENCE_ITEMS items.
The export gates its variants on the same cases (ganserve.core.quality.reference_cases), so it refuses what the server
would.
"""

from __future__ import annotations

import io

import numpy as np

from ganserve.core.errors import GanserveError
from ganserve.core.export_spec import ExportSpec, Predictor

REFERENCE_ITEMS = 2  # items per case: enough to check a precision, small enough to ship and to run at load


def _prefix(index: int) -> str:
    return "" if index == 0 else f"case{index}/"


def reference_arrays(spec: ExportSpec, reference: Predictor) -> dict[str, np.ndarray]:
    """Real held-out inputs (else the example input), their fp32 outputs and any ground truth, keyed as stored."""
    sources = spec.parity_inputs or [{t.name: x.detach().cpu().numpy() for t, x in zip(spec.inputs, spec.example_inputs)}]
    targets = spec.reference_targets if spec.parity_inputs else []
    if targets and len(targets) != len(spec.parity_inputs):
        raise GanserveError(f"reference_targets has {len(targets)} entries for {len(spec.parity_inputs)} parity inputs")
    arrays: dict[str, np.ndarray] = {}
    for index, source in enumerate(sources):
        inputs = {k: np.ascontiguousarray(v[:REFERENCE_ITEMS]) for k, v in source.items()}
        outputs = reference(inputs)
        pre = _prefix(index)
        arrays.update({f"{pre}in:{k}": v for k, v in inputs.items()})
        arrays.update({f"{pre}out:{k}": v for k, v in outputs.items()})
        for name, truth in (targets[index] if targets else {}).items():
            truth = np.ascontiguousarray(truth[:REFERENCE_ITEMS], dtype=np.float32)
            if name not in outputs or truth.shape != outputs[name].shape:
                raise GanserveError(f"reference target {name!r} of parity input {index} has shape {truth.shape}, "
                                    f"the output has {getattr(outputs.get(name), 'shape', None)}")
            arrays[f"{pre}truth:{name}"] = truth
    return arrays


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """The arrays as the bytes of one .npz file."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()
