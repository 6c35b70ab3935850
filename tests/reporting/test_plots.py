import numpy as np
from PIL import Image

from reporting.plots import confusion_matrix_plot, error_grid, pr_curve_plot, training_curves


def test_figures_are_written_as_small_pngs(tmp_path):
    rng = np.random.default_rng(0)
    y, s = rng.integers(0, 2, 40), rng.random(40)
    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.1 / e, "train_ap": 0.5,
                "val_defect_ap": 0.4 + e / 20, "val_graded_ap": 0.3 + e / 20}
               for e in range(1, 5)]
    paths = [
        training_curves(history, tmp_path / "curves.png"),
        confusion_matrix_plot(y, s >= 0.5, tmp_path / "cm.png"),
        pr_curve_plot(y, s, 0.5, tmp_path / "pr.png"),
        error_grid(np.full((2, 6, 32, 32), 128, np.uint8), ["a", "b"], [0.1, 0.9],
                   tmp_path / "grid.png", "worst"),
        error_grid(np.zeros((0, 6, 32, 32), np.uint8), [], [], tmp_path / "empty.png", "none"),
    ]
    for p in paths:
        with Image.open(p) as img:
            assert img.format == "PNG" and max(img.size) <= 1200
        assert p.stat().st_size < 200_000
