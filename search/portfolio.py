"""Proven starting points: the first trials of a new study.

A sampler starts from random configurations, and at a CPU budget the first few random trials
are most of the study. So a new study first runs a small portfolio of configurations that
learned both defect kinds on this kind of data at small budgets (``portfolio.json`` next to
this file: plain data, each entry with how it was found), queued with
``study.enqueue_trial`` and marked in the dashboard (user attribute ``portfolio``). Only the
entries that lie inside the study's search space are queued, so every one replays exactly
(``FixedTrial``) and the sampler learns from them like from its own trials.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import FixedTrial

from search.space import SCRATCH, SearchSpace, suggest_config

log = logging.getLogger(__name__)

PORTFOLIO_FILE = Path(__file__).with_name("portfolio.json")
MAX_QUEUED = 3  # starting points per study: the sampler needs the rest of the budget


@dataclass(frozen=True)
class Entry:
    """One proven configuration: its name, how it was found and its trial parameters."""

    name: str
    found: str
    params: dict


def load_portfolio(path: Path = PORTFOLIO_FILE) -> list[Entry]:
    """The portfolio's entries, best first."""
    d = json.loads(path.read_text())
    return [Entry(name=e["name"], found=e["found"], params=dict(e["params"]))
            for e in d["entries"]]


def fits(params: dict, space: SearchSpace) -> bool:
    """Whether ``params`` lie inside ``space`` (every choice among its choices, every number
    inside its range), so that the trial replays exactly."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # FixedTrial warns on out-of-range values
        try:
            suggest_config(FixedTrial(params), space)
        except (UserWarning, ValueError, KeyError):
            return False
    return True


def enqueue_portfolio(study: optuna.Study, space: SearchSpace,
                      entries: list[Entry] | None = None,
                      limit: int = MAX_QUEUED) -> list[str]:
    """Queue up to ``limit`` entries that fit ``space`` as the study's next trials; returns
    their names."""
    queued = []
    for entry in entries if entries is not None else load_portfolio():
        if len(queued) == limit:
            break
        params = {**entry.params, "flagged_weight": 1.0} if space.noise_aware else entry.params
        if space.backbones and "backbone" not in params:  # a scratch CNN's entry
            params = {**params, "backbone": SCRATCH}
        if not fits(params, space):
            log.debug("portfolio entry %s lies outside this search space", entry.name)
            continue
        study.enqueue_trial(params, user_attrs={"portfolio": entry.name,
                                                "portfolio_found": entry.found})
        queued.append(entry.name)
    return queued

