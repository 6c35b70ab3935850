from collections import Counter

import pytest

from data.split import Split, SplitError, k_for_fraction, make_split

IDS = [f"P{p:03d}_E{e:02d}" for p in range(30) for e in range(4)]
CLASSES = [("0_0", "0_1", "1_0", "1_1", "0_0")[i % 5] for i in range(len(IDS))]


def test_deterministic_and_seed_dependent():
    a = make_split(IDS, CLASSES, k=5, seed=3)
    assert a == make_split(list(reversed(IDS)), list(reversed(CLASSES)), k=5, seed=3)
    assert a.hash != make_split(IDS, CLASSES, k=5, seed=4).hash


def test_folds_are_disjoint_and_cover_everything():
    split = make_split(IDS, CLASSES, k=5, seed=0)
    seen = [k for f in split.folds for k in f]
    assert sorted(seen) == sorted(IDS) and len(seen) == len(set(seen))
    assert not set(split.train_ids(0)) & set(split.val_ids(0))
    assert len(split.val_ids(0)) == len(IDS) // 5


def test_stratified_on_class():
    split = make_split(IDS, CLASSES, k=5, seed=0)
    by_id = dict(zip(IDS, CLASSES, strict=True))
    overall = Counter(CLASSES)
    for fold in split.folds:
        counts = Counter(by_id[k] for k in fold)
        for c, n in overall.items():
            assert abs(counts[c] - n / 5) <= 1


def test_group_regex_keeps_packs_together():
    split = make_split(IDS, CLASSES, k=4, seed=0, group_regex=r"^(P\d+)_")
    for i, fold in enumerate(split.folds):
        packs = {k.split("_")[0] for k in fold}
        others = {k.split("_")[0] for j, f in enumerate(split.folds) if j != i for k in f}
        assert not packs & others


def test_group_regex_errors():
    with pytest.raises(SplitError, match="does not match"):
        make_split([*IDS, "odd"], [*CLASSES, "0_0"], group_regex=r"^(P\d+)_")
    with pytest.raises(SplitError, match="not a valid"):
        make_split(IDS, CLASSES, group_regex="(")


def test_save_load_round_trip(tmp_path):
    split = make_split(IDS, CLASSES, k=5, seed=0)
    assert Split.load(split.save(tmp_path / "split.json")) == split


def test_k_for_fraction():
    assert k_for_fraction(0.2) == 5 and k_for_fraction(0.25) == 4 and k_for_fraction(0.6) == 2
    with pytest.raises(SplitError):
        k_for_fraction(1.5)


def test_a_test_part_is_set_aside_before_the_folds_stratified_and_bound_to_the_hash():
    plain = make_split(IDS, CLASSES, k=4, seed=0)
    split = make_split(IDS, CLASSES, k=4, seed=0, test_fraction=0.2)
    test = set(split.test_ids())
    folds = {k for f in split.folds for k in f}
    assert test and not test & folds and test | folds == set(IDS)
    assert not test & set(split.train_ids()) and not test & set(split.val_ids())
    by_id = dict(zip(IDS, CLASSES, strict=True))
    for c, n in Counter(CLASSES).items():  # stratified like the folds
        assert abs(Counter(by_id[k] for k in test)[c] - 0.2 * n) <= 1
    assert split.hash != plain.hash and plain.test == ()
    assert Split.from_dict(split.to_dict()) == split
    assert make_split(IDS, CLASSES, k=4, seed=0, test_fraction=0.2) == split


def test_a_test_part_keeps_packs_whole_and_needs_enough_erasers():
    split = make_split(IDS, CLASSES, k=4, seed=0, group_regex=r"^(P\d+)_", test_fraction=0.2)
    test_packs = {k.split("_")[0] for k in split.test}
    assert test_packs and not test_packs & {k.split("_")[0] for f in split.folds for k in f}
    with pytest.raises(SplitError, match="too few"):
        make_split(IDS[:12], CLASSES[:12], k=4, seed=0, test_fraction=0.2)
    with pytest.raises(SplitError, match="test fraction"):
        make_split(IDS, CLASSES, test_fraction=0.7)


def test_classes_all_smaller_than_the_folds_are_a_split_error():
    ids = [f"E{i}" for i in range(8)]
    classes = ["0_0", "0_1", "1_0", "1_1"] * 2  # two erasers per class, five folds asked
    with pytest.raises(SplitError, match="every X_Y class has fewer than 5") as info:
        make_split(ids, classes, k=5)
    assert "--val-fraction" in str(info.value)
    assert make_split(ids, classes, k=2).k == 2
