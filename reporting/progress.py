"""Progress of a study as it runs: a bar for the study's finished trials, one for the running
trial's epochs, and a line per finished trial; the same in the terminal and in a notebook."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState
from tqdm.auto import tqdm

from search.study import n_finished
from training.loop import EpochReport

TRIAL_BAR = "{l_bar}{bar}| {n_fmt}/{total_fmt} epochs [{elapsed}{postfix}]"


def trial_line(trial: FrozenTrial) -> str:
    """One line per finished trial: its state, score, epochs, time and architecture, or why it
    stopped."""
    attrs = trial.user_attrs
    if trial.state == TrialState.COMPLETE:
        details = ", ".join(part for part in (
            f"{attrs['epochs_run']} epochs" if "epochs_run" in attrs else "",
            f"{attrs['seconds']:.0f} s" if "seconds" in attrs else "",
            attrs.get("architecture", "")) if part)
        return (f"trial {trial.number:3d} COMPLETE {trial.value:.4f}"
                + (f"  ({details})" if details else ""))
    if "partial" in attrs:  # PRUNED for the sampler, but its weights are kept
        return (f"trial {trial.number:3d} PARTIAL  {trial.value:.4f}  ({attrs['partial']}; "
                f"{attrs.get('architecture', '')})")
    reason = attrs.get("stop_reason") or attrs.get("fail_reason") or ""
    return f"trial {trial.number:3d} {trial.state.name:8s} {reason}"


class StudyProgress:
    """A bar for the study (finished trials) and one for the running trial's epochs.

    ``tqdm.auto`` draws them as widgets in Jupyter and Colab (text bars in a terminal). Pass
    ``on_epoch`` to ``search.session.make_objective`` and ``on_trial`` to
    ``search.session.run``; use it as a context manager so the bars close on errors and
    interrupts too. ``describe`` writes one line per finished trial.
    """

    def __init__(self, study: optuna.Study, n_trials: int, *,
                 describe: Callable[[FrozenTrial], str] = trial_line,
                 bar: Callable[..., tqdm] = tqdm) -> None:
        self._bar = bar
        self._describe = describe
        self.study_bar = bar(total=n_trials, initial=min(n_finished(study), n_trials),
                             desc="study", unit="trial", dynamic_ncols=True)
        self.trial_bar: tqdm | None = None
        self._trial: int | None = None

    def on_epoch(self, number: int, report: EpochReport) -> None:
        if self.trial_bar is None or self._trial != number:
            self._close_trial()
            self._trial = number
            # No rate: the bar is made at the end of the trial's first epoch, so tqdm's rate
            # would start at thousands of epochs per second.
            self.trial_bar = self._bar(total=report.epochs, desc=f"trial {number}",
                                       unit="epoch", leave=False, dynamic_ncols=True,
                                       bar_format=TRIAL_BAR)
        self.trial_bar.update(1)
        self.trial_bar.set_postfix(loss=f"{report.train_loss:.3f}",
                                   score=f"{report.score:.3f}", best=f"{report.best_score:.3f}")

    def on_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._close_trial()
        self.study_bar.n = min(n_finished(study), self.study_bar.total)
        with contextlib.suppress(ValueError):  # no completed trial yet
            self.study_bar.set_postfix(best=f"{study.best_value:.4f}", refresh=False)
        self.study_bar.refresh()
        self.study_bar.write(self._describe(trial))

    def close(self) -> None:
        self._close_trial()
        self.study_bar.close()

    def _close_trial(self) -> None:
        if self.trial_bar is not None:
            self.trial_bar.close()
            self.trial_bar = None

    def __enter__(self) -> StudyProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
