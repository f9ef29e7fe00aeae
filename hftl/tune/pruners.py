"""The pruners `hftl tune --pruner` names. Optuna's own where they fit; `progress` is hftl's: the median compared at
an equal share of each trial's schedule rather than at equal training examples, and `progress-examples` the same
median with each finished trial taken no further than the judged trial's examples either (docs/tuning.md, "What the
pruner does").
"""

from __future__ import annotations

import math
import statistics

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

#: how a study's report and the picked run's card name a pruner where its name alone does not say what it does
IN_WORDS = {"progress": "progress (the median at an equal share of each trial's schedule)",
            "progress-examples": "progress-examples (the median of the finished trials, each at the earlier of an "
                                 "equal share of its schedule and equal training examples)"}

#: trial user attribute: the training examples the trial's whole schedule holds (optimizer steps x effective batch),
#: written by the trial's process when training starts (`hftl.tune.report.TrialReportCallback`)
SCHEDULE_EXAMPLES = "schedule_examples"


def make_pruner(name: str, startup_trials: int) -> optuna.pruners.BasePruner:
    """`progress` (`ProgressMedianPruner`), `progress-examples` (the same, each comparator taken no further than the
    judged trial's examples), `median` (Optuna's MedianPruner: stop a trial whose best value so far is
    worse than the median of the finished trials' values after as many training examples), `halving` (successive
    halving, its first rung estimated from the first finished trial), `quartile` (Optuna's PercentilePruner keeping
    the top 75%: stop a trial whose best value so far is below the lower quartile instead of the median) or `none`.
    `startup_trials`: finished trials before any is stopped (`hftl.tune.defaults.startup_trials` of the budget)."""
    if name in ("progress", "progress-examples"):
        return ProgressMedianPruner(n_startup_trials=startup_trials, no_more_examples=name == "progress-examples")
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=0)
    if name == "quartile":  # stop only the bottom quarter: kinder to long schedules when the epochs are searched
        return optuna.pruners.PercentilePruner(75.0, n_startup_trials=startup_trials, n_warmup_steps=0)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource="auto", reduction_factor=3)
    return optuna.pruners.NopPruner()


def schedule_examples(trial: FrozenTrial) -> int | None:
    """The examples `trial`'s schedule holds: recorded by its process, else (a finished trial of an older study, or
    one replayed) its last reported step, which is where a trial that ran to its end last evaluated."""
    recorded = trial.user_attrs.get(SCHEDULE_EXAMPLES)
    if recorded:
        return int(recorded)
    return max(trial.intermediate_values) if trial.intermediate_values else None


def value_at_share(trial: FrozenTrial, share: float) -> float | None:
    """`trial`'s value at its last evaluation within the first `share` of its schedule (None before its first)."""
    total = schedule_examples(trial)
    if not total:
        return None
    reached = [step for step in trial.intermediate_values if step <= share * total + 1e-6]
    if not reached:
        return None
    value = trial.intermediate_values[max(reached)]
    return None if math.isnan(value) else value


class ProgressMedianPruner(optuna.pruners.BasePruner):
    """Stop a trial whose best value so far is worse than the median of the finished trials' values at the same
    share of their own schedules (examples seen / the examples of the whole schedule), once `n_startup_trials`
    trials have finished.

    Optuna's MedianPruner compares at equal steps (here: training examples), so its bar at a step is only the
    finished trials that evaluated there. When the epochs are searched, a late step is reached only by the long
    schedules that survived the sampler and the pruner, each already at the end of its decayed learning rate: a
    longer schedule, still at a high learning rate there, looks worse and is stopped although it ends best (SST-2,
    sampler seed 67). When the batch size is searched, a step that only small batches evaluate at has a bar of a few
    trials (seed 71: the best stopped after 2,000 examples, against the batch-8 trials alone). At an equal share every
    finished trial is a comparator at every point, each at the same point of its learning-rate schedule. A trial's
    schedule is its `SCHEDULE_EXAMPLES` attribute; one without it (nothing recorded yet) is never stopped by this
    pruner.

    `no_more_examples`: take each finished trial at the earlier of the same share and the judged trial's examples.
    At an equal share a 2-epoch trial judged at 40% (0.8 epoch) meets 4-epoch trials at 1.6 epochs, twice its
    examples, and is stopped although it ends best (SST-2, sampler seed 127); at the earlier of the two a comparator
    has neither seen more examples nor gone further through its schedule than the judged trial.
    """

    def __init__(self, n_startup_trials: int = 5, no_more_examples: bool = False):
        self.n_startup_trials = n_startup_trials
        self.no_more_examples = no_more_examples

    def comparator_share(self, finished: FrozenTrial, step: int, total: int) -> float:
        """The share of `finished`'s schedule at which it is compared with a trial at `step` of its `total`
        examples."""
        if not self.no_more_examples:
            return step / total
        own = schedule_examples(finished)
        return min(step / total, step / own) if own else step / total

    def prune(self, study: optuna.study.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        total = trial.user_attrs.get(SCHEDULE_EXAMPLES)
        if step is None or not total:
            return False
        finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(finished) < max(1, self.n_startup_trials):
            return False
        bar = [v for v in (value_at_share(t, self.comparator_share(t, step, total)) for t in finished) if v is not None]
        values = [v for v in trial.intermediate_values.values() if not math.isnan(v)]
        if not values:  # nothing but NaN reported: Optuna's pruners stop such a trial
            return True
        if not bar:
            return False
        if study.direction == StudyDirection.MAXIMIZE:
            return max(values) < statistics.median(bar)
        return min(values) > statistics.median(bar)
