"""The channel order, the named channel subsets and ``channel_indices``."""

from __future__ import annotations

import pytest

from model.channels import CHANNEL_SETS, CHANNELS, CLASS_CODES, NATIVE_SIZE, channel_indices


def test_channel_order_and_native_size():
    assert CHANNELS == ("GRAY", "AM", "G", "R", "W", "NORMAL")
    assert NATIVE_SIZE == 310


def test_channel_indices_follow_the_requested_order():
    assert channel_indices(("NORMAL", "GRAY")) == [5, 0]
    assert channel_indices(["G", "W", "AM"]) == [2, 4, 1]
    assert channel_indices(CHANNELS) == list(range(6))
    assert channel_indices(()) == []


def test_unknown_channel_is_named_with_the_known_ones():
    with pytest.raises(ValueError, match="unknown channel") as exc:
        channel_indices(("GRAY", "BLUE", "rgb"))
    text = str(exc.value)
    assert "BLUE" in text and "rgb" in text and "'NORMAL'" in text
    with pytest.raises(ValueError):
        channel_indices(("gray",))  # names are case-sensitive


def test_every_channel_set_is_a_known_subset_in_array_order():
    assert CHANNEL_SETS["all"] == CHANNELS
    for name, subset in CHANNEL_SETS.items():
        idx = channel_indices(subset)
        assert idx == sorted(idx) and len(set(idx)) == len(idx), name
    assert "NORMAL" not in CHANNEL_SETS["no_normal"]


def test_class_codes_are_every_print_physical_pair():
    assert CLASS_CODES == ("0_0", "0_1", "1_0", "1_1")
