"""Tests of the synthetic MILAN data generator (data/synth/): format, determinism, label
plan and noise, the physics that makes the data useful (ink vs. relief channels), and the
looks of other product lines (styles and presets)."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.synth import (
    HELD_OUT,
    PHYSICAL_KINDS,
    PRESETS,
    PRINT_KINDS,
    STYLE_JSON,
    SUITE,
    OutputExistsError,
    Style,
    generate,
    make_ids,
    plan_labels,
    preset,
    render_eraser,
    style_from_dict,
)
from data.synth.logo import logo
from data.synth.scene import draw_scene, pack_pose
from data.synth.writer import _POOL_MIN
from make_synthetic import main
from model.channels import CHANNELS, CLASS_CODES

NORMAL = CHANNELS.index("NORMAL")
GRAY = CHANNELS.index("GRAY")
TRUTH_HEADER = ["ID", "label", "print_kind", "physical_kind", "severity", "flipped"]


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def array_bytes(out: Path) -> dict[str, bytes]:
    return {p.stem: p.read_bytes() for p in sorted((out / "arrays").glob("*.npy"))}


def csv_bytes(out: Path) -> list[bytes]:
    names = ("labels_binary.csv", "labels_multiclass.csv", "truth/clean_labels.csv")
    return [(out / name).read_bytes() for name in names]


def abs_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Summed absolute difference per channel."""
    return np.abs(a.astype(np.int32) - b.astype(np.int32)).reshape(-1, a.shape[-1]).sum(0)


# --- determinism ------------------------------------------------------------------------------


def test_same_seed_same_bytes_whatever_the_workers(tmp_path: Path) -> None:
    n = 16
    assert n >= _POOL_MIN  # so that workers=2 really goes through the process pool
    kw = {"n": n, "size": 32, "noise": 0.3, "fp_noise": 0.1}
    kw |= {"zip_arrays": True, "zip_images": True}
    generate(tmp_path / "a", seed=3, workers=1, **kw)
    generate(tmp_path / "b", seed=3, workers=2, **kw)
    generate(tmp_path / "c", seed=4, workers=1, **kw)
    a, b, c = (array_bytes(tmp_path / name) for name in "abc")
    assert len(a) == n
    assert a == b
    assert csv_bytes(tmp_path / "a") == csv_bytes(tmp_path / "b")
    for name in ("arrays.zip", "images.zip"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert all(a[k] != c[k] for k in a)  # another seed: every eraser differs
    assert csv_bytes(tmp_path / "a") != csv_bytes(tmp_path / "c")


def test_geometry_is_size_independent() -> None:
    # The same eraser at 128 px, averaged down to 64 px, matches its 64 px render up to
    # noise and texture; a different eraser does not.
    small, _ = render_eraser(0, 2, "0_1", 64)
    large, _ = render_eraser(0, 2, "0_1", 128)
    other, _ = render_eraser(0, 3, "0_0", 64)
    down = large.reshape(64, 2, 64, 2, 6).mean(axis=(1, 3))
    assert np.abs(small - down).mean() < 8
    assert np.abs(small.astype(float) - other).mean() > 12


# --- delivered format -------------------------------------------------------------------------


def test_files_shapes_and_csvs(tmp_path: Path) -> None:
    out = tmp_path / "set"
    s = generate(
        out, n=10, seed=1, size=40, id_format="P{pack:04d}_E{k:02d}", pack_size=4, workers=1
    )
    ids = [f"P{i // 4:04d}_E{i % 4:02d}" for i in range(10)]
    assert ids[5] == "P0001_E01"
    assert sorted(p.name for p in out.iterdir()) == [
        "arrays", "labels_binary.csv", "labels_multiclass.csv", "truth",
    ]  # fmt: skip
    assert sorted(array_bytes(out)) == sorted(ids)
    for eid in ids:
        arr = np.load(out / "arrays" / f"{eid}.npy")
        assert arr.shape == (40, 40, len(CHANNELS))
        assert arr.dtype == np.uint8
        assert arr.std() > 5  # an image, not a blank

    binary = read_csv(out / "labels_binary.csv")
    multi = read_csv(out / "labels_multiclass.csv")
    truth = read_csv(out / "truth" / "clean_labels.csv")
    assert binary[0] == ["ID", "error"]
    assert multi[0] == ["ID", "label"]
    assert truth[0] == TRUTH_HEADER
    assert [r[0] for r in binary[1:]] == [r[0] for r in multi[1:]] == ids
    for (_, err), (_, lab) in zip(binary[1:], multi[1:], strict=True):
        assert lab in CLASS_CODES
        assert err == str(int(lab != "0_0"))
    for eid, lab, pkind, fkind, sev, flipped in truth[1:]:
        assert eid in ids and flipped == "0"
        assert (pkind in PRINT_KINDS) == (lab[0] == "1") and (pkind == "") == (lab[0] == "0")
        assert (fkind in PHYSICAL_KINDS) == (lab[2] == "1") and (fkind == "") == (lab[2] == "0")
        assert (sev in ("subtle", "obvious")) == (lab != "0_0") and (sev == "") == (lab == "0_0")
    assert s.n == 10 and s.out_dir == out and s.seconds > 0


def test_png_and_zips_equal_the_arrays(tmp_path: Path) -> None:
    out = tmp_path / "set"
    generate(out, n=4, size=32, png=True, zip_arrays=True, zip_images=True, workers=1)
    arrays = array_bytes(out)
    with zipfile.ZipFile(out / "arrays.zip") as zf:
        assert sorted(zf.namelist()) == sorted(f"arrays/{k}.npy" for k in arrays)
        for k, data in arrays.items():
            assert zf.read(f"arrays/{k}.npy") == data
    with zipfile.ZipFile(out / "images.zip") as zf:
        assert len(zf.namelist()) == 4 * len(CHANNELS)
        for k in arrays:
            arr = np.load(out / "arrays" / f"{k}.npy")
            for c, ch in enumerate(CHANNELS):
                png = out / "images" / f"{k}_{ch}.png"
                assert zf.read(f"images/{k}_{ch}.png") == png.read_bytes()
                with Image.open(png) as im:
                    assert im.mode == "L"
                    assert np.array_equal(np.asarray(im), arr[..., c])


def test_zip_images_without_png_writes_no_image_folder(tmp_path: Path) -> None:
    out = tmp_path / "set"
    generate(out, n=2, size=32, zip_images=True, workers=1)
    assert not (out / "images").exists()
    assert not list(out.glob("*.tmp"))
    with zipfile.ZipFile(out / "images.zip") as zf:
        for k in array_bytes(out):
            arr = np.load(out / "arrays" / f"{k}.npy")
            for c, ch in enumerate(CHANNELS):
                with Image.open(io.BytesIO(zf.read(f"images/{k}_{ch}.png"))) as im:
                    assert np.array_equal(np.asarray(im), arr[..., c])


# --- class mix and label noise ----------------------------------------------------------------


def test_small_set_has_every_class_in_exact_proportions(tmp_path: Path) -> None:
    s = generate(tmp_path / "set", n=48, size=32, workers=1)
    truth = read_csv(tmp_path / "set" / "truth" / "clean_labels.csv")[1:]
    labels = [r[1] for r in truth]
    assert set(labels) == set(CLASS_CODES)
    n_def = round(0.35 * 48)
    assert sum(lab != "0_0" for lab in labels) == n_def
    assert (s.n_print, s.n_physical, s.n_both, s.n_good) == tuple(
        labels.count(c) for c in ("1_0", "0_1", "1_1", "0_0")
    )
    assert s.n_flipped == 0  # no noise asked: delivered labels are the truth
    multi = read_csv(tmp_path / "set" / "labels_multiclass.csv")[1:]
    assert [r[1] for r in multi] == labels


def test_plan_labels_proportions_and_rates() -> None:
    clean, noisy = plan_labels(1500, seed=7)
    n_def = round(0.35 * 1500)
    assert sum(c != "0_0" for c in clean) == n_def
    assert abs(clean.count("1_0") - 0.45 * n_def) <= 1
    assert abs(clean.count("0_1") - 0.45 * n_def) <= 1
    assert abs(clean.count("1_1") - 0.10 * n_def) <= 1
    assert noisy == clean
    assert plan_labels(20, seed=1, defect_rate=0.0)[0] == ["0_0"] * 20
    assert plan_labels(100, seed=1) != plan_labels(100, seed=2)


def test_noise_counts_and_truth_marks_exactly_the_flipped(tmp_path: Path) -> None:
    out = tmp_path / "set"
    s = generate(out, n=60, size=32, noise=0.3, fp_noise=0.1, workers=1)
    truth = read_csv(out / "truth" / "clean_labels.csv")[1:]
    multi = dict(read_csv(out / "labels_multiclass.csv")[1:])
    binary = dict(read_csv(out / "labels_binary.csv")[1:])
    n_def = sum(r[1] != "0_0" for r in truth)
    n_good = len(truth) - n_def
    missed = [r for r in truth if r[1] != "0_0" and multi[r[0]] == "0_0"]
    false_pos = [r for r in truth if r[1] == "0_0" and multi[r[0]] != "0_0"]
    assert len(missed) == round(0.3 * n_def) > 0
    assert len(false_pos) == round(0.1 * n_good) > 0
    assert all(multi[r[0]] in ("1_0", "0_1") for r in false_pos)
    assert s.n_flipped == len(missed) + len(false_pos)
    for eid, clean, *_, flipped in truth:
        assert flipped == str(int(multi[eid] != clean))
        assert binary[eid] == str(int(multi[eid] != "0_0"))
    # the images show the truth: a missed defect is still rendered with its defect
    assert all(r[2] or r[3] for r in missed)


def test_id_format_errors() -> None:
    assert make_ids(3, "E{i:03d}") == ["E000", "E001", "E002"]
    with pytest.raises(ValueError, match="duplicate"):
        make_ids(3, "E{k}", pack_size=2)
    with pytest.raises(ValueError, match="bad --id-format"):
        make_ids(3, "E{j}")
    with pytest.raises(ValueError, match="unusable"):
        make_ids(3, "a/{i}")


# --- what the channels show -------------------------------------------------------------------


@pytest.mark.parametrize("index", range(4))
def test_ink_is_nearly_invisible_in_normal(index: int) -> None:
    # Same eraser with and without its print: the renders differ only by the ink.
    with_logo, _ = render_eraser(5, index, "0_0", 96)
    without, _ = render_eraser(5, index, "0_0", 96, logo=False)
    d = np.abs(with_logo.astype(np.int32) - without.astype(np.int32))
    assert (d[..., GRAY] > 100).sum() > 100  # the print is plain in GRAY...
    assert d[..., NORMAL].max() <= 8  # ...and at most a few grey levels anywhere in NORMAL
    assert d[..., NORMAL].sum() < 0.03 * d[..., GRAY].sum()


@pytest.mark.parametrize("kind", ["dent", "crack"])
@pytest.mark.parametrize("severity", ["subtle", "obvious"])
def test_relief_defects_show_in_normal_more_than_in_colour(kind: str, severity: str) -> None:
    for index in range(3):
        good, _ = render_eraser(6, index, "0_0", 96)
        bad, info = render_eraser(6, index, "0_1", 96, physical_kind=kind, severity=severity)
        assert (info.physical_kind, info.severity) == (kind, severity)
        d = abs_diff(good, bad)
        assert d[NORMAL] > 200
        assert d[NORMAL] > (10 if kind == "dent" else 1) * d[:NORMAL].max()


@pytest.mark.parametrize("kind", PRINT_KINDS)
def test_print_defects_show_in_colour_not_in_normal(kind: str) -> None:
    good, _ = render_eraser(8, 1, "0_0", 96)
    subtle, _ = render_eraser(8, 1, "1_0", 96, print_kind=kind, severity="subtle")
    obvious, _ = render_eraser(8, 1, "1_0", 96, print_kind=kind, severity="obvious")
    ds, do = abs_diff(good, subtle), abs_diff(good, obvious)
    assert ds[GRAY] > 10 * ds[NORMAL]
    assert do[GRAY] > 10 * do[NORMAL]
    assert 0 < ds.sum() < do.sum()


@pytest.mark.parametrize("kind", PHYSICAL_KINDS)
def test_physical_defects_change_the_eraser_more_when_obvious(kind: str) -> None:
    good, _ = render_eraser(8, 2, "0_0", 96)
    subtle, _ = render_eraser(8, 2, "0_1", 96, physical_kind=kind, severity="subtle")
    obvious, _ = render_eraser(8, 2, "0_1", 96, physical_kind=kind, severity="obvious")
    ds, do = abs_diff(good, subtle), abs_diff(good, obvious)
    assert ds[NORMAL] > 0
    assert 0 < ds.sum() < do.sum()


# --- other product lines ----------------------------------------------------------------------

STYLED = [p for p in PRESETS if p != "default"]


def test_the_suite_and_the_held_out_presets_are_apart_and_known() -> None:
    assert set(SUITE) | set(HELD_OUT) == set(PRESETS) and not set(SUITE) & set(HELD_OUT)
    assert SUITE[0] == "default" and len(SUITE) >= 4 and preset("default") == Style()
    with pytest.raises(ValueError, match="known: default"):
        preset("neon")


@pytest.mark.parametrize("name", STYLED)
def test_a_preset_changes_the_look_not_the_base_eraser(name: str) -> None:
    style = PRESETS[name]
    plain, _ = render_eraser(4, 3, "0_0", 96, logo=False)
    styled, info = render_eraser(4, 3, "0_0", 96, style=style)
    again, _ = render_eraser(4, 3, "0_0", 96, style=style)
    assert np.array_equal(styled, again) and info.colour in style.colours
    assert abs_diff(plain, styled).sum() > 0


@pytest.mark.parametrize("name", STYLED)
@pytest.mark.parametrize("kind", PRINT_KINDS)
def test_print_defects_of_every_preset_show_in_colour_not_in_normal(name: str, kind: str) -> None:
    style = PRESETS[name]
    good, _ = render_eraser(8, 1, "0_0", 128, style=style)
    bad, info = render_eraser(8, 1, "1_0", 128, print_kind=kind, severity="obvious",
                              style=style)
    d = abs_diff(good, bad)
    assert info.print_kind == kind and d.sum() > 0
    assert max(d[:NORMAL]) > 5 * d[NORMAL]


def test_a_second_line_is_printed_and_defects_stay_on_their_line() -> None:
    two = logo(("MILAN", "430"))
    one = logo(("MILAN 430",))
    assert two.lines == 2 and two.chars == "MILAN430" and one.chars == "MILAN 430"
    assert two.mask.shape[0] > one.mask.shape[0] and two.text_w < one.text_w
    assert not two.same_line(0, 5) and two.same_line(5, 7)


def test_a_pack_shares_its_pose_and_packs_differ() -> None:
    style = PRESETS["quarter_turns"]
    poses = [pack_pose(0, pack, style) for pack in range(16)]
    assert len({round(p / 90) % 4 for p in poses}) > 1  # packs lie at other quarter turns
    assert pack_pose(0, 3, Style()) == 0.0

    def logo_angle(index: int, pack_size: int = 8) -> float:
        pose = pack_pose(0, index // pack_size, style)
        scene = draw_scene(np.random.default_rng([0, index]), "0_0", None, None, None, style,
                           pose)
        return float(np.rad2deg(scene.logo_angle))

    jitter = 2 * style.logo_jitter
    assert all(abs(logo_angle(i) - logo_angle(8)) <= jitter for i in range(9, 16))
    turned = [p for p in range(16) if round((poses[p] - poses[1]) / 90) % 4]
    assert turned and abs(logo_angle(8 * turned[0]) - logo_angle(8)) > 90 - jitter


def test_a_delivery_records_its_style(tmp_path: Path) -> None:
    generate(tmp_path / "d", n=4, seed=1, size=32, workers=1, style=PRESETS["two_line"])
    recorded = style_from_dict(json.loads((tmp_path / "d" / STYLE_JSON).read_text()))
    assert recorded == PRESETS["two_line"]
    with pytest.raises(ValueError, match="unknown colour"):
        Style(colours=("mauve",))
    with pytest.raises(ValueError, match="unknown style field"):
        style_from_dict({"sparkle": 1})


def test_cli_preset(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([str(tmp_path / "c"), "--n", "3", "--size", "32", "--preset", "corner",
                 "--workers", "1"]) == 0
    assert "preset corner" in capsys.readouterr().out
    assert main([str(tmp_path / "x"), "--n", "3", "--preset", "neon"]) == 2
    assert not (tmp_path / "x").exists()


def test_render_rejects_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="unknown label"):
        render_eraser(0, 0, "2_0")
    with pytest.raises(ValueError, match="unknown physical"):
        render_eraser(0, 0, "0_1", physical_kind="scratch")


# --- command line and safety ------------------------------------------------------------------


def test_cli_refuses_a_non_empty_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    assert main([str(tmp_path), "--n", "3", "--size", "32"]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "--force" in err and "Traceback" not in err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    with pytest.raises(OutputExistsError):
        generate(tmp_path, n=3, size=32)


def test_cli_force_overwrites_generated_files_only(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "set"
    assert main([str(out), "--n", "5", "--size", "32", "--workers", "1"]) == 0
    assert "true classes" in capsys.readouterr().out
    (out / "notes.txt").write_text("mine")
    assert main([str(out), "--n", "3", "--size", "32", "--workers", "1", "--force"]) == 0
    assert len(array_bytes(out)) == 3  # stale arrays of the first run are gone
    assert len(read_csv(out / "labels_binary.csv")) == 4
    assert (out / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "args",
    [
        ["--n", "0"],
        ["--n", "many"],
        ["--noise", "1.5"],
        ["--id-format", "X"],
        ["--size", "4"],
        ["--workers", "0"],
    ],
)
def test_cli_bad_arguments_exit_2_and_write_nothing(
    tmp_path: Path, args: list[str], capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "set"
    assert main([str(out), *args]) == 2
    assert "error" in capsys.readouterr().err
    assert not out.exists()


def test_interrupted_run_does_not_look_complete(tmp_path: Path) -> None:
    out = tmp_path / "set"

    def stop(done: int) -> None:
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(out, n=6, size=32, zip_arrays=True, progress=stop, workers=1)
    assert not list(out.glob("*.csv"))
    assert not list(out.glob("*.zip*"))
    assert not (out / "truth").exists()


def test_progress_reports_every_eraser(tmp_path: Path) -> None:
    seen: list[int] = []
    generate(tmp_path / "set", n=5, size=32, progress=seen.append, workers=1)
    assert seen == [1, 2, 3, 4, 5]
