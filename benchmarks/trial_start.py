"""How long a trial's process takes to start, the two ways `hftl tune` can start it, side by side in one run:

- fresh: a new interpreter that imports what a trial imports (`hftl.tune.trial_preload`: torch, transformers,
  datasets, peft, evaluate, hftl's tasks), as every trial started before the fork server, and still does with
  HFTL_TUNE_FORKSERVER=0;
- fork: a fork of the tuner's server, which imported all that once (`hftl.tune.trial_process`).

Each start is timed from just before the process is started to the moment the trial's code runs with its imports
done (the child prints the time); the server's own start (once per tuner, paid by its first trial) is shown apart.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/trial_start.py --n 5 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODULE = "trial_start"


def main(argv: list[str]) -> int:
    """In the child: the trial's imports (already there in a fork), then the time they were done."""
    import importlib

    for name in argv[1:]:
        importlib.import_module(name)
    print(f"ready {time.time()!r}", flush=True)
    return 0


def _ready_at(log: Path) -> float:
    return float(log.read_text().split("ready ")[-1].split()[0])


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def fresh_starts(n: int, preload: list[str], folder: Path) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE), os.environ.get("PYTHONPATH", "")])}
    out = []
    for i in range(n):
        log = folder / f"fresh-{i}.log"
        started, cpu = time.time(), _children_cpu_s()
        with open(log, "w") as stream:
            subprocess.run([sys.executable, "-m", MODULE, "--child", *preload], stdout=stream, env=env, check=True)
        out.append({"start_s": _ready_at(log) - started, "cpu_s": _children_cpu_s() - cpu})
    return out


def fork_starts(n: int, preload: list[str], folder: Path) -> tuple[float, list[dict]]:
    from hftl.tune import trial_process

    trial_process.PRELOAD = list(preload)
    trial_process.FORKABLE.add(MODULE)
    started = time.time()
    problem = trial_process.server_problem()
    if problem:
        sys.exit(f"the fork server cannot be used here: {problem}")
    server_s = time.time() - started
    out = []
    for i in range(n):
        log, measured = folder / f"fork-{i}.log", {}
        started = time.time()
        code = trial_process.launch([sys.executable, "-m", MODULE, "--child", *preload], log, dict(os.environ),
                                    measured=measured)
        assert code == 0 and measured["how"] == "fork", (code, measured, log.read_text())
        out.append({"start_s": _ready_at(log) - started, "cpu_s": measured["cpu_s"]})
    return server_s, out


def run(n: int, preload: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        fresh = fresh_starts(n, preload, Path(folder))
        server_s, forked = fork_starts(n, preload, Path(folder))

    def mean(rows, key):
        return statistics.fmean(r[key] for r in rows)

    return {"n": n, "preload": preload, "fresh_start_s": mean(fresh, "start_s"), "fresh_cpu_s": mean(fresh, "cpu_s"),
            "fork_start_s": mean(forked, "start_s"), "fork_cpu_s": mean(forked, "cpu_s"),
            "server_start_s": server_s, "ratio": mean(fresh, "start_s") / mean(forked, "start_s"),
            "runs": {"fresh": fresh, "fork": forked}}


def render(figures: dict) -> list[str]:
    n = figures["n"]
    return ["| start of a trial's process | mean wall s | mean CPU s (the process's) |", "|---|---|---|",
            f"| fresh interpreter + the trial's imports (n={n}) | {figures['fresh_start_s']:.3f} | "
            f"{figures['fresh_cpu_s']:.3f} |",
            f"| fork of the preloaded server (n={n}) | {figures['fork_start_s']:.3f} | {figures['fork_cpu_s']:.3f} |",
            f"| the server's own start, once per tuner (paid by its first trial) | {figures['server_start_s']:.3f} | |",
            "", f"fresh / fork: {figures['ratio']:.0f}x faster to start by fork; imports: "
                f"{', '.join(figures['preload']) or 'none'}"]


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        sys.exit(main(sys.argv[1:]))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5, help="starts of each kind")
    parser.add_argument("--preload", nargs="*", default=["hftl.tune.trial_preload"],
                        help="what both kinds import (a light list for a smoke run)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from machine import print_results

    results = run(args.n, args.preload)
    print_results("# trial process start: fresh interpreter vs fork of the preloaded server", render(results),
                  results, args.json, bf16="not used")
