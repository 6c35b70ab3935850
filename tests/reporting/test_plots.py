import matplotlib.pyplot as plt
import numpy as np
import optuna
import pytest
from matplotlib.text import Text
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


# ---------------------------------------------------------------------------------------------
# the report's figures: one style, sized in inches, no text under the style's size


def _sizes(fig):
    fig.canvas.draw()
    return [t.get_fontsize() for t in fig.findobj(Text) if t.get_visible() and t.get_text()]


def test_figure_style_sets_the_text_and_leaves_the_rest_as_it_was():
    import matplotlib

    from reporting.plots import STYLES, figure_style

    before = dict(matplotlib.rcParams)
    with figure_style("paper") as style:
        assert style is STYLES["paper"] and matplotlib.rcParams["font.size"] == 8
        assert matplotlib.rcParams["pdf.fonttype"] == 42  # TrueType: no Type 3 in a paper
        assert matplotlib.rcParams["axes.facecolor"] == "white"
    assert dict(matplotlib.rcParams) == before
    assert STYLES["paper"].size("single", 0.5) == (3.3, 1.65)
    assert STYLES["slides"].size("double", 1.0) == (10.0, 5.6)  # capped to the slide


def test_mosaic_tiles_with_gaps():
    from reporting.plots import mosaic

    tiles = np.arange(2 * 3 * 4 * 4, dtype=np.uint8).reshape(2, 3, 4, 4)
    m = mosaic(tiles, gap=1)
    assert m.shape == (9, 14) and m.dtype == np.float64 and np.isnan(m[4]).all()
    assert (m[5:9, 10:14] == tiles[1, 2]).all()
    assert mosaic(tiles, gap=2, fill=255).dtype == np.uint8


@pytest.mark.parametrize("n", [0, 1, 5])
def test_channel_grid_is_as_wide_as_asked_with_the_styles_text(n):
    from reporting.plots import channel_grid, figure_style

    with figure_style("paper"):
        fig = channel_grid(np.full((n, 6, 20, 20), 100, np.uint8),
                           [f"E{i}\nlabelled 0_1" for i in range(n)], width=7.0)
        w, h = fig.get_size_inches()
        assert w == 7.0 and 0.5 < h <= 9.0
        assert min(_sizes(fig)) == 8
        tall = channel_grid(np.zeros((30, 2, 8, 8)), [str(i) for i in range(30)], width=7.0,
                            max_height=5.0, channels=("GRAY", "NORMAL"))
        assert tall.get_size_inches()[1] == 5.0
    plt.close("all")


def _study(n: int = 6) -> optuna.Study:
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))

    def objective(trial):
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        loss = trial.suggest_categorical("loss", ["bce", "focal"])
        gamma = trial.suggest_float("focal_gamma", 0.5, 3.0) if loss == "focal" else 0.0
        for epoch in range(1, 4):
            trial.report(lr * epoch + gamma, epoch)
        if trial.number == 2:
            raise optuna.TrialPruned()
        return lr + gamma

    study.optimize(objective, n_trials=n)
    return study


def test_study_figures_in_the_paper_style():
    from reporting.plots import (
        figure_style,
        history_figure,
        importance_figure,
        intermediate_figure,
        parallel_figure,
        param_importances,
    )

    study = _study()
    importances, _ = param_importances(study)
    with figure_style("paper") as style:
        figs = [history_figure(study, "graded_ap", style.size("single", 0.7), titled=False),
                intermediate_figure(study, "graded_ap", style.size("single", 0.7)),
                importance_figure(importances, "graded_ap", (3.3, 1.5), top=2),
                # focal_gamma exists only in the focal trials: their lines break there
                parallel_figure(study, ["lr", "loss", "focal_gamma"], "graded_ap",
                                style.size("double", 0.45))]
        for fig in figs:
            assert min(_sizes(fig)) >= 8 and fig.get_size_inches()[0] in (3.3, 7.0)
    texts = {t.get_text() for t in figs[3].findobj(Text)}
    assert {"bce", "focal", "0.0001", "0.1"} <= texts and "None" not in texts
    assert len(figs[2].axes[0].patches) == 2  # the top 2 only
    legend = {t.get_text() for t in figs[0].axes[0].get_legend().get_texts()}
    assert legend == {"pruned (score when stopped)", "completed trial", "best so far"}
    plt.close("all")
