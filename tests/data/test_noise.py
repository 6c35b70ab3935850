"""Confident-learning ranking on crafted out-of-fold probabilities (no training)."""

import numpy as np
import pytest

from data.noise import (
    NoiseError,
    cleaned_rows,
    find_issues,
    flagged_hash,
    joint_probs,
    precision_recall,
    read_flagged,
    write_cleaned,
    write_issues,
)

CODES = ("0_0", "0_1", "1_0", "1_1")


def crafted(n=80, flipped=(3, 17, 42, 61), seed=0):
    """True classes, a model that is right and confident about them, and missed defects:
    a few defective erasers whose given label is 0_0."""
    rng = np.random.default_rng(seed)
    true = rng.choice(4, size=n, p=[0.55, 0.2, 0.2, 0.05])
    true[list(flipped)] = rng.choice([1, 2], size=len(flipped))  # make them defective
    # one-vs-all probabilities as the model reports them, from a confident joint
    joint = rng.dirichlet(np.full(4, 0.3), size=n) * 0.15
    joint[np.arange(n), true] += 0.85
    joint[list(flipped)] = 0.01
    joint[list(flipped), true[list(flipped)]] = 0.97  # the out-of-fold model knows better
    joint /= joint.sum(axis=1, keepdims=True)
    probs = np.stack([joint[:, 2] + joint[:, 3], joint[:, 1] + joint[:, 3], joint[:, 0],
                      1 - joint[:, 0]], axis=1)
    given = true.copy()
    given[list(flipped)] = 0
    targets = np.stack([given // 2, given % 2], axis=1).astype(np.uint8)
    ids = [f"E{i:03d}" for i in range(n)]
    return ids, targets, probs, true, [ids[i] for i in flipped]


def test_joint_probs_inverts_every_head():
    rng = np.random.default_rng(1)
    joint = rng.dirichlet(np.ones(4), size=20)  # multiclass softmax over 0_0, 0_1, 1_0, 1_1
    marg = np.stack([joint[:, 2] + joint[:, 3], joint[:, 1] + joint[:, 3], joint[:, 0],
                     1 - joint[:, 0]], axis=1)
    np.testing.assert_allclose(joint_probs(marg), joint, atol=1e-9)
    pp, pf = rng.uniform(size=(2, 20))  # multilabel: independent sigmoids
    ml = np.stack([pp, pf, (1 - pp) * (1 - pf), 1 - (1 - pp) * (1 - pf)], axis=1)
    np.testing.assert_allclose(joint_probs(ml)[:, 3], pp * pf, atol=1e-9)
    np.testing.assert_allclose(joint_probs(ml)[:, 1], (1 - pp) * pf, atol=1e-9)
    binary = joint_probs(ml, "binary")
    assert binary.shape == (20, 2)
    np.testing.assert_allclose(binary.sum(axis=1), 1.0)
    with pytest.raises(NoiseError):
        joint_probs(np.ones((3, 2)))


def test_flipped_labels_are_flagged_first():
    ids, targets, probs, true, flipped = crafted()
    issues = find_issues(ids, targets, probs)
    assert set(flipped) <= set(issues.flagged_ids)
    # the flipped ones are the most suspicious and the suggestion is their true class
    assert set(issues.flagged_ids[:len(flipped)]) == set(flipped)
    rows = {r["id"]: r for r in issues.rows()}
    for k in flipped:
        i = ids.index(k)
        assert rows[k]["given_label"] == "0_0"
        assert rows[k]["suggested_label"] == CODES[true[i]]
        assert rows[k]["quality"] < 0.2 < rows[k]["confidence"]
    pr = precision_recall(issues.flagged_ids, flipped)
    assert pr["recall"] == 1.0 and pr["precision"] >= 0.8


def test_binary_labels_rank_missed_defects():
    ids, targets, probs, _, flipped = crafted(seed=2)
    binary = np.repeat(targets.max(axis=1, keepdims=True), 2, axis=1)
    issues = find_issues(ids, binary, probs, label_kind="binary")
    assert set(flipped) <= set(issues.flagged_ids)
    assert {r["given_label"] for r in issues.rows() if r["id"] in flipped} == {"0"}
    assert {r["suggested_label"] for r in issues.rows() if r["id"] in flipped} == {"1"}


def test_csv_round_trip_and_cleaned_copy(tmp_path):
    ids, targets, probs, true, flipped = crafted()
    issues = find_issues(ids, targets, probs, max_flagged=len(flipped))
    path = write_issues(tmp_path / "label_issues.csv", issues)
    header = path.read_text().splitlines()[0]
    assert header == "rank,id,given_label,suggested_label,confidence,quality"
    assert set(read_flagged(path)) == set(flipped)
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically

    cleaned = dict(cleaned_rows(issues))
    assert len(cleaned) == len(ids)
    assert all(cleaned[k] == CODES[true[ids.index(k)]] for k in flipped)
    assert len(cleaned_rows(issues, "drop")) == len(ids) - len(flipped)
    out = write_cleaned(tmp_path / "clean.csv", issues, header=("Sample", "Class"))
    lines = out.read_text().splitlines()
    assert lines[0] == "Sample,Class" and len(lines) == len(ids) + 1
    with pytest.raises(NoiseError):
        cleaned_rows(issues, "burn")


def test_read_flagged_accepts_plain_id_lists_and_refuses_missing_files(tmp_path):
    plain = tmp_path / "ids.csv"
    plain.write_text("E001.npy\nE002\nE001\n")
    assert read_flagged(plain) == ["E001", "E002"]
    quality = tmp_path / "label_quality.csv"
    quality.write_text("id,fold,flagged\nE1,0,0\nE2,1,1\nE3,0,1\n")
    assert read_flagged(quality) == ["E2", "E3"]
    with pytest.raises(NoiseError, match="does not exist"):
        read_flagged(tmp_path / "nope.csv")
    assert flagged_hash(["b", "a"]) == flagged_hash(["a", "b", "a"])
    assert flagged_hash([]) is None


def test_bad_input_is_refused():
    ids, targets, probs, *_ = crafted()
    with pytest.raises(NoiseError):
        find_issues(ids[:-1], targets, probs)
    bad = probs.copy()
    bad[0, 0] = np.nan
    with pytest.raises(NoiseError):
        find_issues(ids, targets, bad)


def test_missed_only_keeps_good_labels_that_look_defective():
    ids, targets, probs, true, flipped = crafted()
    # one eraser the other way round: truly good, labelled print error, the model sure of good
    k = next(i for i in range(len(ids)) if true[i] == 0 and ids[i] not in flipped)
    targets = targets.copy()
    targets[k] = (1, 0)
    probs = probs.copy()
    probs[k] = (0.02, 0.02, 0.96, 0.04)
    both = find_issues(ids, targets, probs)
    missed = find_issues(ids, targets, probs, missed_only=True)
    assert ids[k] in both.flagged_ids and ids[k] not in missed.flagged_ids
    assert set(flipped) <= set(missed.flagged_ids)
    assert all(r["given_label"] == "0_0" and r["suggested_label"] != "0_0" for r in missed.rows())


def test_kinds_the_model_cannot_see_are_never_flagged():
    from data.noise import near_chance_kinds

    ids, targets, probs, _, _ = crafted()
    assert near_chance_kinds(targets, probs) == {}
    rng = np.random.default_rng(3)
    blind_print = probs.copy()
    blind_print[:, 0] = rng.uniform(size=len(ids))  # print probabilities: pure noise
    weak = near_chance_kinds(targets, blind_print)
    assert set(weak) == {"print"} and 0.3 < weak["print"] < 0.6
    issues = find_issues(ids, targets, blind_print, blind=weak)
    # no flag changes the print bit of the given X_Y label
    assert all((issues.given[i] & 2) == (issues.suggested[i] & 2) for i in issues.order)
    everything = find_issues(ids, targets, probs, blind=["defect"])
    assert not everything.flagged.any() and len(everything.order) == 0
    binary = find_issues(ids, targets.max(axis=1, keepdims=True).repeat(2, axis=1), probs,
                         label_kind="binary", blind=["defect"])
    assert len(binary.order) == 0
