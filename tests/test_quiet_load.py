"""Loading and predicting with a finished run prints what the user asked for and nothing else (issue 23, item 11).

Run as a user would, in a fresh process: train a tiny run (LoRA, then full weights), then `hftl.load(...)` and
`.predict(...)` in the same process, and read everything that process wrote to stdout / stderr after training,
warnings included. Each noise this found had its own cause:

- transformers 5.25 verifies a tensor-parallel plan at load whenever the `transformers.modeling_utils` logger's
  *own* level is WARNING or above; raising that level to hide the load report of a LoRA run's base model (head
  weights the adapter restores) switched that check on, and it listed every layer as "not sharded";
- peft reads the deprecated `PreTrainedModel.is_gradient_checkpointing` when it wraps a model (a FutureWarning);
- transformers draws a "Loading weights" progress bar.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MARK = "=== loaded and predicted below ==="

SCRIPT = f"""
import json, sys, warnings
sys.path.insert(0, {str(REPO / "tests")!r})
from pathlib import Path
from tiny_runs import train_tiny_run
import hftl

tmp, model_dir, strategy = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
result = train_tiny_run(tmp, model_dir, **{{"model.strategy": strategy}})
sys.stdout.flush(); sys.stderr.flush()
print({MARK!r}, flush=True)
print({MARK!r}, file=sys.stderr, flush=True)
warnings.simplefilter("always")  # every warning shows, however often it was already shown
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    run = hftl.load(result.run_dir)
    predictions = run.predict(["the film was great", "dismal plot"])
print(json.dumps({{"labels": [p["label"] for p in predictions],
                  "warnings": [f"{{w.category.__name__}}: {{w.message}}" for w in caught]}}), flush=True)
"""


def _load_and_predict(tmp_path: Path, model_dir: Path, strategy: str) -> tuple[str, str, dict]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_DATASETS_CACHE": str(tmp_path / "cache"),
           "TRANSFORMERS_VERBOSITY": "warning"}
    env.pop("CI", None)  # transformers' logs propagate to the root logger only under CI
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), str(model_dir), strategy], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out, err = done.stdout.split(MARK, 1)[1], done.stderr.split(MARK, 1)[1]
    result = json.loads(out.strip().splitlines()[-1])
    return out.strip(), err.strip(), result


def test_loading_and_predicting_a_lora_run_prints_nothing_else(tmp_path, tiny_bert_dir):
    out, err, result = _load_and_predict(tmp_path, tiny_bert_dir, "lora")
    assert result["labels"] and set(result["labels"]) <= {"pos", "neg"}
    assert result["warnings"] == []  # peft's use of is_gradient_checkpointing: a FutureWarning
    assert "not sharded" not in err  # transformers' tensor-parallel plan check
    assert "Loading weights" not in err  # the weight-loading bar
    assert err == ""
    assert out.count("\n") == 0  # the one line the script printed


def test_loading_and_predicting_a_full_run_prints_nothing_else(tmp_path, tiny_bert_dir):
    out, err, result = _load_and_predict(tmp_path, tiny_bert_dir, "full")
    assert result["labels"] and result["warnings"] == []
    assert err == ""
    assert out.count("\n") == 0
