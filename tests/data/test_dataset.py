import numpy as np
import pytest

from data.dataset import format_summary, load_data, scan
from data.errors import DataError
from tests.conftest import write_delivery


def kinds(problems, level="error"):
    return sorted({p.kind for p in problems if p.level == level})


def test_loads_targets_and_summary(delivery, cache_dir):
    data = load_data(delivery, cache_dir=cache_dir)
    assert len(data) == 12 and data.image_size == 16
    assert data.codes[:4] == ["0_0", "0_1", "1_0", "1_1"]
    assert data.targets.shape == (12, 2)
    summary = data.summary()
    assert summary["defect"] == 9 and summary["print"] == 6 and summary["physical"] == 6
    assert summary["classes"] == {"0_0": 3, "0_1": 3, "1_0": 3, "1_1": 3}
    assert len(summary["label_files"]) == 2
    assert "defective" in format_summary(summary)


def test_images_are_chw_and_resized_once(delivery, cache_dir):
    arrays = write_delivery(delivery)  # same seed: same content
    data = load_data(delivery, cache_dir=cache_dir)
    full = data.images()
    np.testing.assert_array_equal(full[0], arrays["E000"].transpose(2, 0, 1))
    small = data.images(8)
    assert small.shape == (12, 6, 8, 8) and small.dtype == np.uint8
    assert (cache_dir.glob("*/size_8.npy")).__next__().exists()


def test_cache_is_reused_without_decoding(delivery, cache_dir, monkeypatch):
    first = load_data(delivery, cache_dir=cache_dir).images()

    def boom(*args, **kwargs):
        raise AssertionError("decoded again despite a warm cache")

    monkeypatch.setattr("data.sources.NpyFolder.read", boom)
    second = load_data(delivery, cache_dir=cache_dir)
    np.testing.assert_array_equal(second.images(), first)


def test_cache_invalidated_when_a_file_changes(delivery, cache_dir):
    before = load_data(delivery, cache_dir=cache_dir)
    np.save(delivery / "arrays" / "E000.npy", np.zeros((16, 16, 6), np.uint8))
    after = load_data(delivery, cache_dir=cache_dir)
    assert after.images()[0].max() == 0
    assert after.data_hash != before.data_hash


def test_every_problem_is_reported_in_one_pass(delivery, cache_dir):
    arrays = delivery / "arrays"
    np.save(arrays / "E001.npy", np.zeros((16, 16, 3), np.uint8))          # wrong shape
    np.save(arrays / "E002.npy", np.zeros((16, 16, 6), np.float32))        # wrong dtype
    bad = np.zeros((16, 16, 6), np.float64)
    bad[0, 0, 0] = np.nan
    np.save(arrays / "E003.npy", bad)                                      # non-finite
    raw = (arrays / "E004.npy").read_bytes()
    (arrays / "E004.npy").write_bytes(raw[: len(raw) // 2])                # truncated
    np.save(arrays / "E005.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    (arrays / "E006.npy").unlink()                                         # labelled, no image
    np.save(arrays / "X999.npy", np.zeros((16, 16, 6), np.uint8))          # image, no label
    eraser_set, problems = scan(delivery, cache_dir=cache_dir)
    assert eraser_set is None
    assert kinds(problems) == ["dtype", "missing-image", "non-finite", "shape", "unreadable"]
    assert kinds(problems, "warning") == ["unlabelled"]
    where = " ".join(p.where for p in problems)
    for name in ("E001.npy", "E002.npy", "E003.npy", "E004.npy", "E005.npy", "E006"):
        assert name in where
    assert not list(cache_dir.glob("*/meta.json")), "nothing cached from unusable data"


def test_channel_first_array_gets_a_hint(delivery, cache_dir):
    np.save(delivery / "arrays" / "E001.npy", np.zeros((6, 16, 16), np.uint8))
    with pytest.raises(DataError) as info:
        load_data(delivery, cache_dir=cache_dir)
    assert "transpose" in str(info.value)


def test_mixed_sizes(delivery, cache_dir):
    np.save(delivery / "arrays" / "E005.npy", np.zeros((20, 20, 6), np.uint8))
    with pytest.raises(DataError, match="share one size"):
        load_data(delivery, cache_dir=cache_dir)


def test_unlabelled_images_are_left_out_with_a_warning(delivery, cache_dir):
    np.save(delivery / "arrays" / "X999.npy", np.zeros((16, 16, 6), np.uint8))
    data = load_data(delivery, cache_dir=cache_dir)
    assert "X999" not in data.ids and len(data) == 12
    assert kinds(data.problems, "warning") == ["unlabelled"]


def test_stray_csv_is_skipped_when_found_not_when_given(delivery, cache_dir):
    (delivery / "preds.csv").write_text("id,prob\nE000,0.3\n")
    data = load_data(delivery, cache_dir=cache_dir)
    assert "not-labels" in kinds(data.problems, "warning")
    with pytest.raises(DataError, match="not a label file"):
        load_data(delivery, [delivery / "preds.csv"], cache_dir=cache_dir)


def test_unlabelled_prediction_data(delivery, cache_dir):
    for p in delivery.glob("*.csv"):
        p.unlink()
    with pytest.raises(DataError, match="no label CSV"):
        load_data(delivery, cache_dir=cache_dir)
    data = load_data(delivery, require_labels=False, cache_dir=cache_dir)
    assert data.targets is None and len(data) == 12


def test_binary_only_labels(delivery, cache_dir):
    data = load_data(delivery, [delivery / "binary.csv"], cache_dir=cache_dir)
    assert data.label_kind == "binary"
    np.testing.assert_array_equal(data.targets[:, 0], data.targets[:, 1])
