import numpy as np
import torch
from torch.utils.data import DataLoader

from data.augment import AugmentConfig
from data.pipeline import DeviceBatches, EraserDataset, Preprocessor, channel_stats


def images(n=10, s=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 6, s, s), dtype=np.uint8)


def test_channel_stats_match_numpy():
    x = images()
    mean, std = channel_stats(x, [0, 5])
    ref = x[:, [0, 5]].astype(np.float64) / 255
    np.testing.assert_allclose(mean, ref.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(std, ref.std(axis=(0, 2, 3)), rtol=1e-6)


def test_photometric_ops_work_on_six_channels_in_range():
    torch.manual_seed(0)
    cfg = AugmentConfig.from_strength(0.0, 1.0, flips=False)
    pre = Preprocessor(range(6), [0.0] * 6, [1.0] * 6, cfg)
    x = torch.from_numpy(images(16))
    out = pre(x, train=True)
    assert out.shape == (16, 6, 16, 16) and out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out, pre(x, train=False))


def test_fast_path_and_dataset_give_the_same_samples():
    x = images(10)
    y = np.random.default_rng(1).integers(0, 2, (10, 2))
    mean, std = channel_stats(x, [0, 2, 5])
    pre = Preprocessor([0, 2, 5], mean, std)
    batches = DeviceBatches(x, y, "cpu", batch_size=4)
    fast = [(pre(xb), yb) for _, xb, yb in batches.epoch(shuffle=False)]
    loader = DataLoader(EraserDataset(x, y, pre), batch_size=4, shuffle=False)
    for (fx, fy), (dx, dy) in zip(fast, loader, strict=True):
        torch.testing.assert_close(fx, dx, rtol=0, atol=0)
        torch.testing.assert_close(fy, dy)
    assert fast[0][0].shape == (4, 3, 16, 16)


def test_epochs_shuffle_and_balance():
    x = images(40, 4)
    codes = ["0_0"] * 34 + ["1_1"] * 6
    y = np.array([[int(c[0]), int(c[2])] for c in codes])
    b = DeviceBatches(x, y, "cpu", batch_size=16, seed=0)
    idx = torch.cat([i for i, _, _ in b.epoch()])
    assert sorted(idx.tolist()) == list(range(40)) and idx.tolist() != list(range(40))
    bal = DeviceBatches(x, y, "cpu", batch_size=16, sampling="balanced", codes=codes, seed=0)
    drawn = torch.cat([t for _ in range(20) for _, _, t in bal.epoch()])
    share = drawn[:, 0].mean().item()
    assert 0.4 < share < 0.6  # the 15 % minority class is drawn about half the time


def test_rows_select_a_subset_of_a_shared_tensor():
    x = images(10)
    y = np.arange(20).reshape(10, 2)
    b = DeviceBatches(x, y, "cpu", batch_size=3, rows=[7, 2, 5])
    got = [(xb, yb) for _, xb, yb in b.epoch(shuffle=False)]
    torch.testing.assert_close(torch.cat([g[0] for g in got]), torch.from_numpy(x[[7, 2, 5]]))
    assert torch.cat([g[1] for g in got])[:, 0].tolist() == [14.0, 4.0, 10.0]
