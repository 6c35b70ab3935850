"""The decoded image store and its on-disk cache (data.cache)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data.cache import ImageStore, build_store, cache_key, default_cache_dir
from data.sources import NpyFolder
from model.preprocess import resize_uint8
from tests.conftest import write_delivery


@pytest.fixture
def source(delivery):
    return NpyFolder(delivery / "arrays")


def test_in_memory_store_holds_every_eraser_channel_first(delivery, source):
    ids = source.ids()
    store, problems = build_store(source, ids, cache_dir=None, workers=2)
    assert problems == [] and isinstance(store, ImageStore) and store.folder is None
    assert store.native.shape == (12, 6, 16, 16) and store.native.dtype == np.uint8
    assert store.size == 16
    first = np.load(delivery / "arrays" / f"{ids[3]}.npy")
    np.testing.assert_array_equal(store.native[3], first.transpose(2, 0, 1))
    assert len(set(store.digests)) == 12 and all(len(d) == 32 for d in store.digests)
    np.testing.assert_array_equal(store.rows([ids[5], ids[0]]), [5, 0])


def test_at_size_resizes_with_the_one_resize(source):
    ids = source.ids()
    store, _ = build_store(source, ids, cache_dir=None)
    rows = np.array([2, 7])
    small = store.at_size(8, rows)
    assert small.shape == (2, 6, 8, 8) and small.dtype == np.uint8
    expected = resize_uint8(torch.from_numpy(np.array(store.native[rows])), 8).numpy()
    np.testing.assert_array_equal(small, expected)
    np.testing.assert_array_equal(store.at_size(16, rows), store.native[rows])


def test_disk_cache_is_written_once_and_reused(source, cache_dir, monkeypatch):
    ids = source.ids()
    progress = []
    store, problems = build_store(source, ids, cache_dir=cache_dir,
                                  progress=lambda d, t: progress.append((d, t)))
    assert not problems and store.folder == cache_dir / cache_key(source, ids)
    assert (store.folder / "meta.json").is_file() and progress[-1] == (12, 12)
    assert isinstance(store.native, np.memmap)
    resized = store.at_size(8, np.arange(12))
    assert (store.folder / "size_8.npy").is_file()
    assert not list(cache_dir.glob(".building-*"))  # no staging folder left

    def no_decoding(self, eraser_id):
        raise AssertionError("decoded again despite a warm cache")

    monkeypatch.setattr(NpyFolder, "read", no_decoding)
    again, _ = build_store(source, ids, cache_dir=cache_dir)
    assert again.digests == store.digests
    np.testing.assert_array_equal(again.at_size(8, np.arange(12)), resized)


def test_cache_key_depends_on_the_ids_and_the_files(delivery, source):
    ids = source.ids()
    key = cache_key(source, ids)
    assert cache_key(source, ids) == key and len(key) == 24
    assert cache_key(source, ids[:-1]) != key
    write_delivery(delivery, ids=[ids[0]], seed=9)  # rewrite one file
    assert cache_key(NpyFolder(delivery / "arrays"), ids) != key


def test_bad_images_are_all_reported_and_nothing_is_cached(delivery, cache_dir):
    arrays = delivery / "arrays"
    (arrays / "E001.npy").write_bytes(b"not an array")
    np.save(arrays / "E004.npy", np.zeros((8, 8, 6), np.uint8))  # another size
    source = NpyFolder(arrays)
    store, problems = build_store(source, source.ids(), cache_dir=cache_dir)
    assert store is None
    where = {p.where: p for p in problems}
    assert str(arrays / "E001.npy") in where
    assert "all erasers must share one size" in where[str(arrays / "E004.npy")].message
    assert all(p.level == "error" for p in problems)
    assert not list(cache_dir.rglob("meta.json"))
    empty, problems = build_store(source, [], cache_dir=None)
    assert empty is None and problems[0].kind == "no-images"


def test_default_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ERASER_CACHE_DIR", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("ERASER_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "eraser-search"
