"""What the server's self-ensemble (``ensemble: 8``, ganserve.core.ensemble) gains and costs, measured at export.

For a tile-safe image-to-image model whose application declares a held-out evaluation, the exported fp32 model is
evaluated once more through ONNX Runtime with every held-out input run as its 8 flips and rotations and the outputs
averaged; the card's ``ensemble`` entry records the headline metric both ways and the latency of one held-out
input both ways on this CPU. Any other model gets ``{"applies": false, "why": ...}``.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ganserve.core.card_roles import rpc_for
from ganserve.core.contract import ModelCard
from ganserve.core.ensemble import PASSES, self_ensemble_sync
from ganserve.core.errors import GanserveError
from ganserve.core.export_spec import ExportSpec, Predictor
from ganserve.core.machine import describe as describe_cpu
from ganserve.export.predictors import p50_ms

# One held-out input is timed: one pass as the median of TIMING_REPEATS runs after a warm-up, the 8 passes once (the
# evaluation just ran each turned shape of that input, so it is warm; the 8 passes are themselves an average).
TIMING_REPEATS = 3


def why_not(spec: ExportSpec, card: ModelCard) -> str:
    """Why the self-ensemble does not apply to this model ("" when it does)."""
    rpc = rpc_for(card)
    if rpc != "Transform":
        return (f"not an image-to-image model (served by {rpc or 'ModelInfer only'}): there is no output image to "
                "turn back and average")
    if not card.tile_safe:
        return ("not tile-safe (statistics over the whole image, such as instance norm): its output for a flipped "
                "or rotated image is not the flipped or rotated output")
    if not spec.dynamic_spatial:
        return "fixed input size: a quarter turn of a non-square input does not fit it"
    if any(t.layout.upper() != "NCHW" for t in card.inputs if len(t.shape) == 3):
        return "an image input not in NCHW layout"
    if spec.evaluate is None or not spec.quality_key:
        return "no held-out evaluation declared by the model, so there is no gain to measure"
    return ""


def ensemble_predictor(card: ModelCard, run: Predictor) -> Predictor:
    """``run`` as the server's ``ensemble: 8`` runs it: every spatial (4-D) input turned together (the image with
    its mask, condition planes), the image output turned back and averaged over the 8 passes; the other outputs
    are those of the first (identity) pass."""
    image = card.output_by_role("image")
    assert image is not None  # why_not saw an image-to-image model

    def predict(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        spatial = [name for name, value in inputs.items() if np.ndim(value) == 4]
        rest = {name: value for name, value in inputs.items() if name not in spatial}
        cuts = np.cumsum([inputs[name].shape[1] for name in spatial])[:-1]
        first: dict[str, np.ndarray] = {}

        def one(turned: np.ndarray) -> np.ndarray:
            out = run({**rest, **dict(zip(spatial, np.split(turned, cuts, axis=1)))})
            if not first:
                first.update(out)
            return np.asarray(out[image.name], np.float32)

        stacked = np.concatenate([np.asarray(inputs[name], np.float32) for name in spatial], axis=1)
        averaged = self_ensemble_sync(stacked, one, max(1, card.scale))
        return {**first, image.name: averaged}

    return predict


def _first_input(run: Predictor, seen: list[dict[str, np.ndarray]]) -> Predictor:
    """``run``, keeping the first inputs it is given (one held-out input, to time)."""
    def predict(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not seen:
            seen.append({name: np.array(value) for name, value in inputs.items()})
        return run(inputs)
    return predict


def measure_ensemble(spec: ExportSpec, card: ModelCard, run: Predictor, plain: dict[str, float],
                     evaluate: Callable[[ExportSpec, Predictor], dict[str, float]]) -> dict[str, Any]:
    """The card's ``ensemble`` entry: the held-out headline metric of ``run`` (the fp32 model in ONNX Runtime;
    ``plain`` is its evaluation already made) without and with the 8 passes, and the latency of one held-out input
    both ways; ``{"applies": False, "why": ...}`` where the self-ensemble does not apply."""
    why = why_not(spec, card)
    if why:
        return {"applies": False, "why": why}
    key = spec.quality_key
    seen: list[dict[str, np.ndarray]] = []
    averaged = ensemble_predictor(card, run)
    try:
        with_ensemble = evaluate(spec, _first_input(averaged, seen))
    except GanserveError as exc:  # the export itself stands; the card says the gain is unknown, and why
        return {"applies": False, "why": f"the held-out evaluation with the 8 passes failed: {exc}"}
    if key not in plain or key not in with_ensemble or not seen:
        return {"applies": False, "why": f"the held-out evaluation gives no {key!r} to compare"}
    ms_plain = p50_ms(run, seen[0], TIMING_REPEATS)
    ms_ensemble = p50_ms(averaged, seen[0], 1, warm_up=False)
    image = card.input_by_role("image")
    shape = seen[0][image.name].shape if image is not None and image.name in seen[0] else ()
    return {
        "applies": True,
        "passes": PASSES,
        "metric": key,
        "plain": plain[key],
        "ensemble": with_ensemble[key],
        "gain": with_ensemble[key] - plain[key],
        "latency_ms_plain": round(ms_plain, 3),
        "latency_ms_ensemble": round(ms_ensemble, 3),
        "cost_ratio": round(ms_ensemble / ms_plain, 2) if ms_plain > 0 else None,
        "timed_input": f"{shape[3]}x{shape[2]}" if len(shape) == 4 else "",
        "provider": "CPUExecutionProvider, fp32",
        "cpu": describe_cpu(),
        "how": (f"held-out {key} of the exported fp32 model in ONNX Runtime, one pass vs the average of the "
                f"{PASSES} flips and rotations (as the server's ensemble: 8 runs them); latency on the first held-out "
                f"input: one pass the median of {TIMING_REPEATS} runs, the {PASSES} passes one run"),
    }
