"""ganserve.core.ensemble: the 8 flips and rotations, their inverses, and the averaging of a predictor over them."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from ganserve.core.ensemble import (NAMES, PASSES, check_passes, inverse, run_sync, self_ensemble,
                                    self_ensemble_sync, swaps_sides, transform)

X = np.arange(2 * 3 * 5 * 7, dtype=np.float32).reshape(2, 3, 5, 7)  # non-square, every value distinct


@pytest.mark.parametrize("k", range(PASSES))
def test_each_inverse_restores_the_array_exactly(k: int) -> None:
    moved = transform(X, k)
    assert moved.shape == ((2, 3, 7, 5) if swaps_sides(k) else X.shape)
    assert np.array_equal(inverse(moved, k), X)
    assert np.array_equal(inverse(np.ascontiguousarray(moved), k), X)  # also from a copy (what a model returns)


def test_the_eight_transforms_are_distinct_and_act_on_h_and_w_only() -> None:
    assert len(NAMES) == PASSES
    assert len({transform(X, k).tobytes() for k in range(PASSES)}) == PASSES
    for k in range(PASSES):  # batch and channel axes stay where they are
        assert np.array_equal(transform(X, k)[1, 2], transform(X[1, 2], k))
    assert np.array_equal(transform(X, 1)[0, 0], np.rot90(X[0, 0]))
    assert np.array_equal(transform(X, 4)[0, 0], X[0, 0, :, ::-1])
    with pytest.raises(ValueError, match="0..7"):
        transform(X, 8)


def test_check_passes_names_the_allowed_values() -> None:
    assert [check_passes(v) for v in (0, 1, 8)] == [1, 1, 8]
    for bad in (3, -1, 2, 16):
        with pytest.raises(ValueError, match=r"0 or 1 \(off\) or 8"):
            check_passes(bad)


def _shifted_model(scale: int, pad_to: int):
    """A model that is not equivariant (output = input upscaled + a ramp along W), padding its input at the
    bottom/right to multiples of ``pad_to`` with a value that would show if it were not cropped away."""
    def predict(x: np.ndarray) -> np.ndarray:
        h, w = x.shape[2:]
        padded = np.pad(x, ((0, 0), (0, 0), (0, -h % pad_to), (0, -w % pad_to)), constant_values=1e6)
        y = padded.repeat(scale, 2).repeat(scale, 3)
        return y + np.arange(y.shape[3], dtype=np.float32)
    return predict


def test_average_of_the_turned_back_outputs_with_padding_cropped_before_inverting() -> None:
    scale, model = 2, _shifted_model(2, 4)
    got = self_ensemble_sync(X, model, scale)
    expected = np.mean([inverse(model(np.ascontiguousarray(transform(X, k)))[:, :, : (7 if swaps_sides(k) else 5) * 2,
                                                                             : (5 if swaps_sides(k) else 7) * 2], k)
                        for k in range(PASSES)], axis=0)
    assert got.dtype == np.float32 and got.shape == (2, 3, 10, 14)
    assert np.allclose(got, expected) and got.max() < 1e5  # no padding value reached the result
    # the ramp along W, averaged over the turns, is no longer along W alone: the ensemble differs from one pass
    assert not np.allclose(got, model(X)[:, :, :10, :14])
    assert np.allclose(self_ensemble_sync(X, model, scale, passes=1), model(X)[:, :, :10, :14])


def test_an_async_predictor_gives_the_same_average() -> None:
    model = _shifted_model(1, 1)

    async def predict(x: np.ndarray) -> np.ndarray:
        await asyncio.sleep(0)
        return model(x)
    assert np.array_equal(asyncio.run(self_ensemble(X, predict)), self_ensemble_sync(X, model))
    with pytest.raises(TypeError, match="await"):
        run_sync(self_ensemble(X, predict))


def test_an_output_smaller_than_the_scaled_input_is_refused() -> None:
    with pytest.raises(ValueError, match="smaller"):
        self_ensemble_sync(X, lambda x: x[:, :, :-1], scale=1)
    with pytest.raises(ValueError, match="NCHW"):
        self_ensemble_sync(X[0], lambda x: x)
