"""The label-issue report (reporting.label_report): its caution rule and its tables."""

from __future__ import annotations

import numpy as np
import pytest

from data.noise import LabelIssues
from reporting.label_report import caution, cleaned_header, transitions, truth_file


@pytest.mark.parametrize(("auroc", "share", "warned"), [
    (0.95, 0.05, False), (0.70, 0.05, True), (0.95, 0.30, True), (float("nan"), 0.0, True)])
def test_caution_when_the_model_is_weak_or_flags_too_many(auroc, share, warned):
    summary = {"oof_metrics": {"defect_auroc": auroc}, "flagged_share": share}
    assert (caution(summary) is not None) == warned


@pytest.mark.parametrize(("print_auroc", "physical_auroc", "blind"), [
    (0.97, 0.90, None), (0.97, 0.55, "physical"), (0.70, 0.95, "print")])
def test_caution_names_the_defect_kind_the_model_cannot_see(print_auroc, physical_auroc, blind):
    summary = {"oof_metrics": {"defect_auroc": 0.9, "print_auroc": print_auroc,
                               "physical_auroc": physical_auroc}, "flagged_share": 0.05}
    warning = caution(summary)
    assert (warning is None) == (blind is None)
    if blind:
        assert f"recognises {blind} defects only" in warning


def test_caution_without_per_kind_figures_looks_at_the_defect_auroc_only():
    summary = {"oof_metrics": {"defect_auroc": 0.9}, "flagged_share": 0.05}
    assert caution(summary) is None
    summary["flagged_share"] = 0.2
    assert "flags 20 % of the erasers" in caution(summary)


def test_transitions_count_the_flagged_rows_only():
    issues = LabelIssues(
        ids=["A", "B", "C", "D"], label_kind="multiclass",
        given=np.array([0, 0, 0, 3]), suggested=np.array([1, 1, 0, 0]),
        confidence=np.full(4, 0.9), quality=np.array([0.1, 0.2, 0.9, 0.3]),
        flagged=np.array([True, True, False, True]), order=np.array([0, 1, 3]))
    names = issues.classes
    assert transitions(issues) == [
        {"given": names[0], "suggested": names[1], "erasers": 2},
        {"given": names[3], "suggested": names[0], "erasers": 1}]


def test_truth_file_and_cleaned_header(synthetic, synthetic_set, tmp_path):
    assert truth_file(synthetic) == synthetic / "truth" / "clean_labels.csv"
    assert truth_file(synthetic / "labels_multiclass.csv") == truth_file(synthetic)
    assert truth_file(tmp_path) is None
    assert cleaned_header(synthetic_set) == ("ID", "label")  # the multi-class file's header
