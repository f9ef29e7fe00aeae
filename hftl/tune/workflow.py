"""What `hftl tune` does, top to bottom: run trials, wait for the other workers, select, compare, report."""

from __future__ import annotations

import fcntl
import logging

from hftl.errors import HftlError
from hftl.tune.study import Plan, TuneOptions, open_study, run_worker, wait_for_others
from hftl.tune.trial_process import _Stop, stop_server

logger = logging.getLogger(__name__)


def tune(plan: Plan, options: TuneOptions) -> int:
    """Run this worker's trials, then (unless `options.select` is off) the selection, once per study folder."""
    try:
        return _tune(plan, options)
    finally:
        stop_server()  # its trials' CPU time then counts as this process's


def _tune(plan: Plan, options: TuneOptions) -> int:
    from hftl.tune.selection import compare_study, select

    try:
        done = run_worker(plan, options)
    except _Stop as err:
        raise HftlError(f"stopped by {err}: the running trial is marked failed (a new one will replace it). Run the "
                        "same hftl tune command again to continue the study.") from None
    logger.info("this worker ran: %s", ", ".join(f"{n} {s.lower()}" for s, n in done.items()) or "no trial")
    if not options.select:
        print(f"trials done; the study is in {plan.folder.path} (selection left to the worker without --no-select)")
        return 0
    study, storage = open_study(plan, options)
    wait_for_others(plan, options, study, storage)
    lock_path = plan.folder.path / plan.folder.SELECTION_LOCK
    with open(lock_path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"another worker is selecting in {plan.folder.path}; this one stops here.")
            return 0
        try:
            selection = select(plan, options, study)
        except _Stop as err:
            raise HftlError(f"stopped by {err} during the selection; run hftl tune again to finish it (finished "
                            "re-runs are kept).") from None
        compare_study(plan)
    print(f"study {plan.study_name}: report {plan.folder.report}, picked trial-{selection['picked']}, "
          f"configuration {plan.folder.best_config}")
    if selection.get("test"):
        print("test (evaluated once): " + ", ".join(f"{k} {v}" for k, v in selection["test"]["shown"].items()))
    return 0
