import numpy as np

from check_data import main


def test_usable_data_prints_summary(delivery, cache_dir, capsys):
    assert main([str(delivery), "--cache-dir", str(cache_dir)]) == 0
    out = capsys.readouterr().out
    assert "erasers      12" in out and "class 1_1" in out and "OK: 12 erasers" in out


def test_unusable_data_exits_2_naming_the_file(delivery, cache_dir, capsys):
    np.save(delivery / "arrays" / "E003.npy", np.zeros((16, 16, 6), np.int16))
    assert main([str(delivery), "--cache-dir", str(cache_dir)]) == 2
    err = capsys.readouterr().err
    assert "E003.npy" in err and "int16" in err and "NOT USABLE" in err
    assert "Traceback" not in err


def test_missing_path_exits_2(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_dry_run_decodes_nothing(delivery, capsys):
    assert main([str(delivery), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "12 erasers" in out and "multi.csv" in out
