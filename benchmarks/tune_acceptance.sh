#!/usr/bin/env bash
# The `hftl tune` acceptance of issue 24 on SST-2 (docs/tuning_acceptance.md), one step after another:
#   1. hftl tune, 24 trials with its default pruner (the progress median since 2026-12-06), then --top 3 --seeds 3
#      (sampler seed 42), on the first 4,000 rows of train.tsv split 80/20 (90/10 before the twelfth run:
#      --validation-share 0.1)
#   2. the same study without pruning (same sampler seed): the pruning saving at equal best validation
#   3. Trainer.hyperparameter_search (optuna backend, its default space, 24 trials) on the same data
#   4. the shipped default config, 3 seeds, on the same data
#   5. the tuner's overhead per trial, process start included
#
#   bash benchmarks/tune_acceptance.sh OUT_DIR [hp_search.py options]
#   bash benchmarks/tune_acceptance.sh /tmp/hp-smoke --rows 200 --trials 2 --top 1 --seeds 1 --max-epochs 1 --eval-steps 2
#
# Writes OUT_DIR/acceptance.log (this script's output), a log per step (tune.log, nopruning.log, baseline.log,
# default.log), results.json and results.md (the figures side by side with the machine's CPU flags).
# Resumable: run the same command again after an interruption; finished steps are skipped and an interrupted
# hftl tune study continues (benchmarks/hp_search.py explains what is re-run). Environment: PYTHON (default: the
# repository's .venv), and whatever else the steps should see (e.g. OMP_NUM_THREADS); run it under nohup or tmux.
set -euo pipefail
out=${1:?usage: bash benchmarks/tune_acceptance.sh OUT_DIR [hp_search.py options]}
shift
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$repo/.venv/bin/python}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$repo"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"  # the hftl of this checkout, in every step's processes
echo "== $(date -u '+%F %T') UTC: $python benchmarks/hp_search.py --workdir $out $*" >> "$out/acceptance.log"
"$python" benchmarks/hp_search.py --workdir "$out" "$@" 2>&1 | tee -a "$out/acceptance.log"
