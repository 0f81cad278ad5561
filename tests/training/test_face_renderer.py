"""The procedural face renderer: reproducible, age changes the face and nothing else, groups and sizes right."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ganserve.core.errors import GanserveError
from ganserve.training import age_groups as A
from ganserve.training.data import faces as F


def _diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def test_same_seed_same_face() -> None:
    first = F.render(F.identity("held_out", 3), 41.5, F.scene("held_out", 3), 64)
    again = F.render(F.identity("held_out", 3), 41.5, F.scene("held_out", 3), 64)
    assert first.shape == (64, 64, 3) and first.dtype == np.uint8
    assert np.array_equal(first, again)
    assert F.identity("train", 5) == F.identity("train", 5) and F.scene("train", 5, 2) == F.scene("train", 5, 2)


def test_pools_and_indices_give_different_people() -> None:
    people = [F.identity(pool, i) for pool in F.POOLS for i in range(20)]
    assert len({dataclasses.astuple(p) for p in people}) == len(people)
    a = F.render(F.identity("train", 0), 30, F.scene("train", 0), 64)
    b = F.render(F.identity("held_out", 0), 30, F.scene("train", 0), 64)
    assert _diff(a, b) > 5.0  # same scene, other person: a visibly different face


def test_age_changes_the_face_while_identity_and_scene_stay_fixed() -> None:
    person, sc = F.identity("held_out", 7), F.scene("held_out", 7)
    before = dataclasses.astuple(person)
    young, adult, adult_next_year, old = (F.render(person, a, sc, 64) for a in (6, 24, 25, 70))
    assert dataclasses.astuple(person) == before  # frozen parameters, unchanged by rendering
    with pytest.raises(dataclasses.FrozenInstanceError):
        person.head_w = 2.0  # type: ignore[misc]
    assert _diff(adult, old) > 4 * _diff(adult, adult_next_year)
    assert _diff(adult, young) > 4 * _diff(adult, adult_next_year)
    # the background corner belongs to the scene, not to the age
    assert np.array_equal(young[:4, :4], old[:4, :4])


def test_ageing_cues_grow_with_age() -> None:
    """Greying: the hair loses saturation; lines and spots: the face gains fine detail (gradient energy)."""
    sats, detail = [], []
    for i in range(6):
        person, sc = F.identity("train", i), F.scene("train", i)
        person = dataclasses.replace(person, hair=(150, 72, 36), grey_onset=35.0, balding=0.0, hair_style=0)
        for age, bucket in ((25, 0), (75, 1)):
            img = F.render(person, age, sc, 128).astype(np.float64)
            top = img[30:45, 50:78]  # the hair cap above the forehead
            sats.append((bucket, float((top.max(2) - top.min(2)).mean())))
            face = img[48:62, 50:78].mean(axis=2)  # the forehead, where the creases come
            detail.append((bucket, float(np.abs(np.diff(face, axis=0)).mean())))
    young_sat = np.mean([s for b, s in sats if b == 0])
    old_sat = np.mean([s for b, s in sats if b == 1])
    assert old_sat < 0.6 * young_sat
    assert np.mean([d for b, d in detail if b == 1]) > 2.0 * np.mean([d for b, d in detail if b == 0])


def test_128_is_the_same_face_as_64() -> None:
    person, sc = F.identity("judge", 1), F.scene("judge", 1)
    big = F.render(person, 50, sc, 128)
    small = F.render(person, 50, sc, 64)
    assert big.shape == (128, 128, 3)
    pooled = big.astype(np.float64).reshape(64, 2, 64, 2, 3).mean(axis=(1, 3))
    assert _diff(pooled, small) < 4.0


@pytest.mark.parametrize("age,group", [(0, 0), (18, 0), (18.5, 0), (19, 1), (29.9, 1), (30, 2), (49, 3), (50, 4),
                                       (59, 4), (60, 5), (80, 5), (116, 5)])
def test_age_groups(age: float, group: int) -> None:
    assert A.age_group(age) == group
    assert A.AGE_GROUPS[group] in ("0-18", "19-29", "30-39", "40-49", "50-59", "60+")


def test_group_centres_fall_in_their_groups() -> None:
    assert [A.age_group(a) for a in A.GROUP_CENTRES] == list(range(6))


def test_bad_arguments_are_clear_errors() -> None:
    person, sc = F.identity("train", 0), F.scene("train", 0)
    for call in (lambda: F.render(person, 30, sc, 96), lambda: F.render(person, -1, sc),
                 lambda: F.render(person, 81, sc), lambda: F.identity("nope", 0), lambda: F.identity("train", -1),
                 lambda: A.age_group(float("nan"))):
        with pytest.raises(GanserveError):
            call()
