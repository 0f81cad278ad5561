"""One way to quote an exception on one line: it never fails, whatever the message."""

from __future__ import annotations

import pytest

from ganserve.core.errors import described, first_line


@pytest.mark.parametrize("exc, line", [
    (ValueError(""), "ValueError"),  # an empty message: the type's name (str.splitlines()[0] raised IndexError here)
    (OSError("\n\n  \n"), "OSError"),  # blank lines only
    (RuntimeError("\n  weights do not fit\nsecond line"), "weights do not fit"),  # the first non-blank line
    (KeyError("k"), "'k'"),
])
def test_first_line_of_any_message(exc: BaseException, line: str) -> None:
    assert first_line(exc) == line


def test_first_line_is_cut_to_the_limit_and_described_names_the_type() -> None:
    assert first_line(ValueError("x" * 500), 120) == "x" * 120
    assert described(MemoryError()) == "MemoryError"
    assert described(ValueError("bad\nworse")) == "ValueError: bad"
