"""What a delivery's labels can teach: too few of a kind is an error when nothing can be
learnt, a warning when the other kind can."""

from __future__ import annotations

import numpy as np
import pytest

from data.kinds import MIN_TO_LEARN, assess, kind_counts, label_problems
from data.labels import BINARY, MULTICLASS


def targets(n_good: int, n_print: int, n_physical: int, n_both: int = 0) -> np.ndarray:
    rows = [(0, 0)] * n_good + [(1, 0)] * n_print + [(0, 1)] * n_physical + [(1, 1)] * n_both
    return np.array(rows, dtype=np.uint8).reshape(-1, 2)


def test_kind_counts_per_graded_kind():
    assert kind_counts(targets(5, 3, 2, 1), MULTICLASS) == {
        "defect": 6, "no_defect": 5, "print_error": 4, "physical_error": 3}
    binary = np.array([(1, 1), (0, 0), (1, 1)], dtype=np.uint8)
    assert kind_counts(binary, BINARY) == {"defect": 2, "no_defect": 1}


def test_enough_of_every_kind_teaches_everything():
    teach = assess(targets(20, 10, 10), MULTICLASS)
    assert teach.ok and teach.ungradable == () and teach.warnings() == []


@pytest.mark.parametrize("t, kind", [(targets(40, 0, 0), "defective"),
                                     (targets(0, 10, 10), "labelled good")])
def test_no_contrast_is_an_error(t, kind):
    teach = assess(t, MULTICLASS)
    assert not teach.ok and kind in teach.errors[0] and "label CSV" in teach.errors[0]


def test_one_rare_kind_is_a_warning_both_rare_an_error():
    teach = assess(targets(30, 12, 2), MULTICLASS)
    assert teach.ok and teach.ungradable == ("physical_error",)
    (warning,) = teach.warnings()
    assert f"only 2 physical defects (fewer than {MIN_TO_LEARN})" in warning
    assert "cannot learn to grade physical defects" in warning
    teach = assess(targets(30, 3, 3), MULTICLASS)
    assert not teach.ok and "can learn to grade neither kind" in teach.errors[0]


def test_binary_labels_need_only_defective_and_good_erasers():
    t = np.array([(1, 1)] * 6 + [(0, 0)] * 6, dtype=np.uint8)
    assert assess(t, BINARY).ok
    assert not assess(t[6:], BINARY).ok


def test_label_problems_error_without_defects_and_warn_for_an_absent_kind():
    (problem,) = label_problems(targets(12, 0, 0), MULTICLASS, "labels.csv")
    assert problem.level == "error" and problem.where == "labels.csv"
    (problem,) = label_problems(targets(12, 4, 0), MULTICLASS, "labels.csv")
    assert problem.level == "warning" and "no physical defects" in problem.message
    assert label_problems(targets(12, 1, 1), MULTICLASS, "labels.csv") == []
