"""Progress of a running study (reporting.progress): the bars and a line per trial."""

from __future__ import annotations

from types import SimpleNamespace

import optuna
from optuna.trial import TrialState, create_trial

from reporting.progress import StudyProgress, trial_line


class FakeBar:
    def __init__(self, total=None, initial=0, desc="", **kw):
        self.total, self.n, self.desc, self.closed, self.lines = total, initial, desc, False, []

    def update(self, k):
        self.n += k

    def set_postfix(self, *a, **kw):
        pass

    def refresh(self):
        pass

    def write(self, line):
        self.lines.append(line)

    def close(self):
        self.closed = True


def test_study_progress_counts_epochs_and_trials():
    study = optuna.create_study(direction="maximize")
    bars: list[FakeBar] = []

    def bar(**kw):
        bars.append(FakeBar(**kw))
        return bars[-1]

    report = SimpleNamespace(epochs=3, train_loss=0.5, score=0.6, best_score=0.7)
    with StudyProgress(study, n_trials=2, bar=bar) as progress:
        for number in (0, 1):
            trial = study.ask()
            progress.on_epoch(number, report)
            progress.on_epoch(number, report)
            study.tell(trial, 0.5 + number / 10)
            progress.on_trial(study, study.trials[-1])
    study_bar, first, second = bars
    assert (first.desc, first.n, first.closed) == ("trial 0", 2, True)
    assert second.desc == "trial 1" and second.closed
    assert study_bar.n == 2 and study_bar.closed
    assert study_bar.lines == ["trial   0 COMPLETE 0.5000", "trial   1 COMPLETE 0.6000"]


def test_study_progress_starts_from_the_trials_already_finished():
    study = optuna.create_study(direction="maximize")
    for v in (0.1, 0.2, 0.3):
        study.add_trial(create_trial(value=v))
    bars = []
    with StudyProgress(study, n_trials=2, bar=lambda **kw: bars.append(FakeBar(**kw)) or bars[-1]):
        pass
    assert bars[0].n == 2 and bars[0].total == 2 and bars[0].closed  # capped at the total


def test_trial_line_for_complete_and_stopped_trials():
    done = create_trial(value=0.81234, user_attrs={"epochs_run": 7, "seconds": 12.4,
                                                   "architecture": "3x conv 8-32"})
    done.number = 4
    assert trial_line(done) == "trial   4 COMPLETE 0.8123  (7 epochs, 12 s, 3x conv 8-32)"
    bare = create_trial(value=0.5)
    bare.number = 12
    assert trial_line(bare) == "trial  12 COMPLETE 0.5000"
    pruned = create_trial(state=TrialState.PRUNED, user_attrs={"stop_reason": "pruned at 3"})
    pruned.number = 5
    assert trial_line(pruned) == "trial   5 PRUNED   pruned at 3"
    failed = create_trial(state=TrialState.FAIL, user_attrs={"fail_reason": "out of memory"})
    failed.number = 6
    assert trial_line(failed) == "trial   6 FAIL     out of memory"
