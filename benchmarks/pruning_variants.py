"""Replay variants of the progress median (`hftl.tune.pruners.ProgressMedianPruner`, `--pruner progress`), all but
one (`--pruner progress-examples`) not shipped by hftl, over the unpruned studies kept in `benchmarks/data/pruning/`:
which keeps each study's best, and what it saves. docs/tuning_acceptance.md, "The acceptance, tenth run", reads the
result. No training.

    python benchmarks/pruning_variants.py [STUDY_DIR ...] [--train-rows 3600] [--chance 0.4994817866983493]

Each variant changes one thing: when a trial is first judged, which trials are its comparators, how far under their
median it must fall, which quantile is the bar, which signal is compared (the validation loss, for the studies whose
`eval_loss.json` keeps each trial's, instead of the objective), or (Optuna's `PatientPruner`) whether it must also
have stopped improving. The replay is `benchmarks/pruning_replay.py`'s (start-up trials, warm-up and chance bar as
`hftl tune` uses them), and it shares that script's limit: a real study's sampler goes elsewhere after each stop.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import math
import statistics
from pathlib import Path

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hftl.tune.defaults import DEFAULT_PRUNE_AFTER_EPOCHS
from hftl.tune.pruners import SCHEDULE_EXAMPLES, ProgressMedianPruner, value_at_share

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("pruning_replay", HERE / "pruning_replay.py")
pruning_replay = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pruning_replay)


class ProgressVariant(ProgressMedianPruner):
    """The progress median with one change. `min_share`: no trial judged before this share of its schedule;
    `count_stopped`: stopped trials are comparators too (their last value carried forward); `margin`: stop only
    this far under the bar; `standard_errors`: a margin of that many binomial standard errors of a split of
    `validation_rows` at the bar's value; `quantile`: the bar (50: the median)."""

    def __init__(self, n_startup_trials: int, min_share: float = 0.0, count_stopped: bool = False,
                 margin: float = 0.0, standard_errors: float = 0.0, validation_rows: int = 400,
                 quantile: int = 50):
        super().__init__(n_startup_trials)
        self.min_share, self.count_stopped, self.quantile = min_share, count_stopped, quantile
        self.margin, self.standard_errors, self.validation_rows = margin, standard_errors, validation_rows

    def prune(self, study: optuna.study.Study, trial: FrozenTrial) -> bool:
        step, total = trial.last_step, trial.user_attrs.get(SCHEDULE_EXAMPLES)
        if step is None or not total or step / total < self.min_share:
            return False
        finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(finished) < max(1, self.n_startup_trials):
            return False
        if self.count_stopped:
            finished = finished + study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
        bar = [v for v in (value_at_share(t, self.comparator_share(t, step, total)) for t in finished) if v is not None]
        values = [v for v in trial.intermediate_values.values() if not math.isnan(v)]
        if not values:
            return True
        if not bar:
            return False
        maximize = study.direction == StudyDirection.MAXIMIZE
        quantile = self.quantile if maximize else 100 - self.quantile
        level = statistics.median(bar) if quantile == 50 else \
            statistics.quantiles(bar, n=100, method="inclusive")[quantile - 1]
        margin = self.margin + self.standard_errors * math.sqrt(max(level * (1 - level), 0) / self.validation_rows)
        return max(values) < level - margin if maximize else min(values) > level + margin


#: trial user attribute of a replayed trial: its validation loss after each number of training examples, from the
#: study's `eval_loss.json` (the trials' `trainer_state.json`, kept beside `study.json`)
EVAL_LOSS = "eval_loss"


class LossVariant(ProgressMedianPruner):
    """The progress median judged on the validation loss instead of the objective: stop a trial whose lowest loss so
    far is above the median of the finished trials' losses at the same share of their schedules. The loss is a
    smoother signal than a macro-F1 of 400 rows: does it rank configurations earlier? (Chance stays judged on the
    objective, as `hftl tune` judges it.)"""

    def prune(self, study: optuna.study.Study, trial: FrozenTrial) -> bool:
        step, total = trial.last_step, trial.user_attrs.get(SCHEDULE_EXAMPLES)
        finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if step is None or not total or len(finished) < max(1, self.n_startup_trials):
            return False
        bar = [v for v in (_loss_at_share(t, step / total) for t in finished) if v is not None]
        own = [loss for at, loss in trial.user_attrs[EVAL_LOSS].items() if at <= step]
        return bool(bar) and min(own) > statistics.median(bar)


def _loss_at_share(trial: FrozenTrial, share: float) -> float | None:
    """`value_at_share` of the trial's validation loss: the same trial, its losses as its values."""
    as_losses = copy.copy(trial)
    as_losses.intermediate_values = trial.user_attrs[EVAL_LOSS]
    return value_at_share(as_losses, share)


#: name -> a function of the start-up trials that builds the pruner
VARIANTS = {
    "progress (`--pruner progress`)": ProgressMedianPruner,
    **{f"judged from {s:.0%} of the schedule": (lambda n, s=s: ProgressVariant(n, min_share=s))
       for s in (0.1, 0.15, 0.2, 0.3)},
    "stopped trials as comparators": lambda n: ProgressVariant(n, count_stopped=True),
    "0.01 under the median": lambda n: ProgressVariant(n, margin=0.01),
    "one standard error under the median": lambda n: ProgressVariant(n, standard_errors=1.0),
    **{f"the {q}th percentile": (lambda n, q=q: ProgressVariant(n, quantile=q)) for q in (40, 45)},
    **{f"PatientPruner, patience {p}": (lambda n, p=p: optuna.pruners.PatientPruner(ProgressMedianPruner(n), p))
       for p in (1, 2, 3)},
    "the earlier of equal share and equal examples (`--pruner progress-examples`)":
        lambda n: ProgressMedianPruner(n, no_more_examples=True),
    "judged on the validation loss": LossVariant,
}


def load_study(folder: Path) -> tuple[list[dict], str, float]:
    """The complete trials of the study in `folder` (each with its validation losses as `EVAL_LOSS`, where the
    folder keeps `eval_loss.json`), its direction and its best value."""
    record = json.loads((folder / "study.json").read_text())
    trials = [t for t in record["trials"] if t["state"] == "COMPLETE"]
    losses_file = folder / "eval_loss.json"
    if losses_file.is_file():
        losses = json.loads(losses_file.read_text())
        for t in trials:
            series = {int(at): loss for at, loss in losses[str(t["number"])].items()}
            t["user_attrs"] = {**t["user_attrs"], EVAL_LOSS: series}
    direction = record["objective"]["direction"]
    pick = max if direction == "maximize" else min
    return trials, direction, pick(t["value"] for t in trials)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("studies", type=Path, nargs="*",
                        default=sorted((HERE / "data" / "pruning").glob("*-unpruned")),
                        help="unpruned study folders (default: those kept in benchmarks/data/pruning/)")
    parser.add_argument("--train-rows", type=int, default=3600, help="training examples an epoch")
    parser.add_argument("--warm-up", type=float, default=DEFAULT_PRUNE_AFTER_EPOCHS,
                        help="epochs before a trial is judged (default: hftl tune's, %(default)s)")
    parser.add_argument("--startup-trials", type=int, default=8)
    parser.add_argument("--chance", type=float, default=0.4994817866983493,
                        help="chance's validation score (the default: SST-2's macro-F1 on its 400 rows)")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    studies = {folder.name: load_study(folder) for folder in args.studies}
    print("| variant | " + " | ".join(studies) + " | best kept | >= 30% at the best | mean saved |")
    print("|---|" + "---:|" * (len(studies) + 3))
    for name, build in VARIANTS.items():
        cells, kept, met, saved = [], 0, 0, 0.0
        for trials, direction, best in studies.values():
            if build is LossVariant and EVAL_LOSS not in trials[0]["user_attrs"]:
                cells.append("–")  # no losses kept for this study
                continue
            r = pruning_replay.replay(trials, args.train_rows, args.warm_up, build, args.startup_trials,
                                      direction=direction, chance=args.chance)
            best_kept = r["best"] == best
            kept, met, saved = kept + best_kept, met + (best_kept and r["saved"] >= 0.3), saved + r["saved"]
            cells.append(f"{r['saved']:.1%}" + ("" if best_kept else f" lost ({r['best']:.4f})"))
        print(f"| {name} | " + " | ".join(cells) + f" | {kept} | {met} | {saved / len(studies):.1%} |")


if __name__ == "__main__":
    main()
