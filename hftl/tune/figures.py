"""Optuna's own figures of a study (matplotlib backend, no plotly): optimisation history, parameter importances,
parallel coordinates. Drawn from the study folder's `study.json` snapshot, so a study is drawn without its storage
(which may be a database on another machine)."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

from hftl.tune.folder import StudyDir

logger = logging.getLogger(__name__)


def study_from_record(record: dict):
    """An in-memory Optuna study holding the recorded trials (complete and pruned)."""
    import optuna
    from optuna.distributions import json_to_distribution
    from optuna.trial import TrialState, create_trial

    study = optuna.create_study(direction=record["objective"]["direction"], study_name=record["study"])
    for trial in record["trials"]:
        if trial["state"] not in ("COMPLETE", "PRUNED"):
            continue
        study.add_trial(create_trial(
            state=TrialState[trial["state"]],
            value=trial["value"],
            params=trial["params"],
            distributions={k: json_to_distribution(json.dumps(d)) for k, d in trial["distributions"].items()},
            intermediate_values={int(k): v for k, v in trial["intermediate_values"].items()},
        ))
    return study


def study_figures(path: str | Path, folder: str | Path) -> dict[str, Path]:
    """Draw the figures of the study at `path` into `folder`; returns them by name (a figure Optuna cannot draw,
    e.g. importances with one parameter or too few trials, is skipped with a note in the log)."""
    import matplotlib.pyplot as plt  # Optuna's matplotlib figures go through pyplot; each is closed once saved
    import optuna
    from optuna.visualization import matplotlib as figures

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    record = StudyDir(path).record()
    study = study_from_record(record)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    metric = record["objective"]["metric"]
    drawn = {}
    plots = {"optimization_history": figures.plot_optimization_history,
             "param_importances": figures.plot_param_importances,
             "parallel_coordinate": figures.plot_parallel_coordinate}
    for name, plot in plots.items():
        if not complete or (name == "param_importances" and len(complete) < 2):
            continue
        target = Path(folder) / f"{name}.png"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna marks its matplotlib figures experimental
                axes = plot(study, target_name=f"validation {metric}")
            figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
            figure.tight_layout()
            figure.savefig(target, dpi=100)
            plt.close(figure)
            drawn[name] = target
        except (ValueError, RuntimeError) as err:  # e.g. importances of a space with one parameter
            logger.info("study figure %s skipped: %s", name, err)
    return drawn
