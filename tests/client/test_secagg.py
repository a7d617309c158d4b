"""The merchant refuses to send a delta SecAgg+ would clip, and says how to fix it."""

from __future__ import annotations

import numpy as np
import pytest

from client.secagg import SecAggRangeError, check_range


def test_a_delta_inside_the_range_passes_and_one_outside_is_an_error() -> None:
    check_range({"item.weight": np.array([[-7.9, 8.0]]), "empty": np.zeros(0)}, clipping_range=8.0)
    with pytest.raises(SecAggRangeError) as caught:
        check_range({"ok": np.zeros(3), "item.bias": np.array([0.5, -9.25])}, clipping_range=8.0)
    message = str(caught.value)
    assert "'item.bias'" in message and "9.25" in message and "+-8" in message
    assert "secagg-clip-range=16" in message  # the next power of two above the value, doubled


def test_a_non_finite_delta_is_refused() -> None:
    with pytest.raises(SecAggRangeError, match="nan"):
        check_range({"w": np.array([np.nan])}, clipping_range=8.0)
