"""Loading a delivery for a command (cli.loading.load_or_fail)."""

from __future__ import annotations

import numpy as np

from cli.loading import load_or_fail
from data.dataset import EraserSet


def test_good_data_gives_the_eraser_set(delivery, cache_dir, capsys):
    data = load_or_fail(delivery, None, cache_dir=cache_dir)
    assert isinstance(data, EraserSet) and len(data) == 12
    assert data.images().shape == (12, 6, 16, 16)
    err = capsys.readouterr().err
    assert "cannot be" not in err and "check_data.py" not in err  # a bar, no error message


def test_bad_data_prints_the_problems_naming_the_path_and_returns_none(delivery, cache_dir,
                                                                       capsys):
    (delivery / "arrays" / "E003.npy").write_bytes(b"garbage")
    np.save(delivery / "arrays" / "E005.npy", np.zeros((8, 8, 6), np.uint8))
    assert load_or_fail(delivery, None, cache_dir=cache_dir, what="searched") is None
    err = capsys.readouterr().err
    assert f"{delivery} cannot be searched:" in err
    assert "E003.npy" in err and "E005.npy" in err
    assert "python check_data.py" in err


def test_the_check_data_hint_can_be_left_out(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert load_or_fail(missing, None, cache_dir=None, hint=False) is None
    err = capsys.readouterr().err
    assert str(missing) in err and "check_data.py" not in err
