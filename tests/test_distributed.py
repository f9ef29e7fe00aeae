"""Two-process DDP on CPU (gloo) matches one process at the same global batch.

Checks: the training loss of every step and the gradient norms (no loss doubling from
`average_tokens_across_devices`), the final weights and metrics; evaluation sees every example exactly once
(odd-sized eval sets, so the distributed sampler pads); only rank 0 writes to the run folder (rank 1
writes just its own RNG state into checkpoints, which resuming needs).

Launched with `torchrun --nproc_per_node 2`, running `recipes/text_classification.py` (the user-facing
script; `hftl train` where it is absent). Note: `accelerate launch --cpu --num_processes 2` would run one
process; `recipes/accelerate/cpu_ddp.yaml` is the accelerate equivalent of this launch. Multi-node is simulated as
two `accelerate launch` commands with `recipes/accelerate/cpu_multi_node.yaml` and machine ranks 0 and 1 on
127.0.0.1; the `--cpu` form of that launch, which accelerate runs as two single processes, stops with exit 2.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from hftl import TextClassificationRecipe
from hftl.runner import run_recipe
from tests.conftest import make_sentences, write_tsv

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "recipes" / "text_classification.py"

# Runs the recipe under tests/write_audit.py, recording every file this rank writes below the run folder.
AUDITED = """
import atexit, json, os, runpy, sys

sys.path.insert(0, os.environ["HFTL_TEST_DIR"])
from write_audit import WriteAudit

rank = os.environ.get("RANK", "0")
audit = WriteAudit(os.environ["HFTL_TEST_OUT"], label=rank).install()

if os.environ.get("HFTL_TEST_SIGTERM_RANK") == rank:  # SIGTERM to this process only, at the end of step N
    import signal
    import transformers

    class Fault(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == int(os.environ["HFTL_TEST_SIGTERM_STEP"]):
                os.kill(os.getpid(), signal.SIGTERM)

    original_init = transformers.Trainer.__init__
    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.add_callback(Fault())
    transformers.Trainer.__init__ = __init__

atexit.register(lambda: open(os.path.join(os.environ["HFTL_TEST_AUDIT"], f"writes-{rank}.json"), "w").write(
    json.dumps(audit.labelled(rank))))
target = sys.argv[1]
sys.argv = sys.argv[1:]
if target.endswith(".py"):
    runpy.run_path(target, run_name="__main__")
else:
    runpy.run_module(target, run_name="__main__", alter_sys=True)
"""


@pytest.fixture
def ddp_setup(tmp_path, tiny_bert_dir):
    # Dropout off: with it, each process draws its own masks and the runs cannot match step for step.
    model = tmp_path / "tiny-bert-no-dropout"
    shutil.copytree(tiny_bert_dir, model)
    model_config = json.loads((model / "config.json").read_text())
    model_config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
    (model / "config.json").write_text(json.dumps(model_config))
    data = {
        "train": write_tsv(tmp_path / "train.tsv", make_sentences(64, seed=1)),
        "validation": write_tsv(tmp_path / "dev.tsv", make_sentences(21, seed=2)),  # odd sizes: the
        "test": write_tsv(tmp_path / "test.tsv", make_sentences(23, seed=3)),  # sampler must pad
    }

    def config(name: str, per_device_batch: int) -> dict:
        return {
            "task": "text-classification",
            "model": {"name_or_path": str(model), "strategy": "full"},
            "data": {**{k: str(v) for k, v in data.items()}, "text_column": "sentence", "max_length": 32},
            "training": {"output_dir": str(tmp_path / name), "num_train_epochs": 1, "learning_rate": 5e-3,
                         "per_device_train_batch_size": per_device_batch, "per_device_eval_batch_size": 4,
                         "seed": 11, "logging_steps": 1, "eval_strategy": "no", "use_cpu": True},
            "speed": {"bf16": False, "group_by_length": False},
        }

    return tmp_path, config


def _launch_ddp(tmp_path: Path, config: dict, **extra_env) -> subprocess.CompletedProcess:
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(config))
    probe = tmp_path / "audited.py"
    probe.write_text(AUDITED)
    audit = tmp_path / "audit"
    audit.mkdir()
    if RECIPE.is_file():
        target = [str(RECIPE), "--config", str(path)]
    else:
        target = ["hftl.cli", "train", str(path)]
    env = {**os.environ, "HFTL_TEST_OUT": config["training"]["output_dir"], "HFTL_TEST_AUDIT": str(audit),
           "HFTL_TEST_DIR": str(REPO / "tests"),
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **extra_env}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(probe), *target]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=str(REPO), timeout=600)


def _history(run_dir: Path) -> list[dict]:
    return [h for h in json.loads((run_dir / "trainer_state.json").read_text())["log_history"] if "loss" in h]


def _single_process_run(make_config):
    torch.set_num_threads(1)
    try:
        return run_recipe(TextClassificationRecipe(make_config("single", per_device_batch=16)))
    finally:
        torch.set_num_threads(os.cpu_count() or 1)


def _assert_matches_one_process(tmp_path: Path, ddp_dir: Path, single) -> None:
    """The 2-process run in `ddp_dir` (per-device batch 8) against one process at batch 16."""
    single_dir = single.run_dir

    # Every step: the same loss (not doubled) and the same gradient norm.
    ddp_log, single_log = _history(ddp_dir), _history(single_dir)
    assert [h["step"] for h in ddp_log] == [h["step"] for h in single_log] == [1, 2, 3, 4]
    for d, s in zip(ddp_log, single_log):
        assert d["loss"] == pytest.approx(s["loss"], rel=1e-4), (d, s)
        assert d["grad_norm"] == pytest.approx(s["grad_norm"], rel=1e-3), (d, s)

    # The same final weights.
    a, b = load_file(ddp_dir / "model.safetensors"), load_file(single_dir / "model.safetensors")
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4, msg=name)

    # Evaluation saw each example once: supports equal the files' label counts, metrics equal one process.
    ddp_metrics = json.loads((ddp_dir / "metrics.json").read_text())
    for split, rows in (("validation", make_sentences(21, seed=2)), ("test", make_sentences(23, seed=3))):
        got, want = ddp_metrics[split], single.metrics[split]
        assert sum(map(sum, got["confusion_matrix"])) == len(rows)
        for label in ("neg", "pos"):
            assert got["per_class"][label]["support"] == sum(1 for _, y in rows if y == label)
        assert got["confusion_matrix"] == want["confusion_matrix"]
        assert got["accuracy"] == pytest.approx(want["accuracy"])
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-4)

    # The manifest: world size 2, and the speed-ups that ran (length-sorted evaluation is skipped under DDP).
    ddp_manifest = json.loads((ddp_dir / "manifest.json").read_text())
    single_speedups = json.loads((single_dir / "manifest.json").read_text())["speedups"]
    assert ddp_manifest["training"]["world_size"] == 2
    assert ddp_manifest["speedups"]["sort_eval_by_length"] is False and single_speedups["sort_eval_by_length"] is True

    # Only rank 0 wrote to the run folder (rank 1: its RNG state in the checkpoint, for resuming), and the run's
    # lock is gone.
    rank0 = json.loads((tmp_path / "audit" / "writes-0.json").read_text())
    rank1 = json.loads((tmp_path / "audit" / "writes-1.json").read_text())
    assert any(w.endswith("metrics.json") or "metrics.json" in w for w in rank0), rank0
    assert any(w.endswith("model.safetensors") for w in rank0), rank0
    assert "checkpoint-4/rng_state_1.pth" in rank1
    assert set(rank1) <= {"checkpoint-4/rng_state_1.pth", "os.mkdir checkpoint-4"}, rank1
    assert not (ddp_dir / ".hftl-run.lock").exists()


def test_two_process_ddp_matches_one_process(ddp_setup):
    tmp_path, make_config = ddp_setup
    proc = _launch_ddp(tmp_path, make_config("ddp", per_device_batch=8))
    assert proc.returncode == 0, proc.stderr[-4000:]
    _assert_matches_one_process(tmp_path, tmp_path / "ddp", _single_process_run(make_config))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch_machines(tmp_path: Path, config: dict, launch_args: list[list[str]]) -> list[subprocess.CompletedProcess]:
    """One `accelerate launch` per simulated machine, all at once, each running the audited recipe."""
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    probe = tmp_path / "audited.py"
    probe.write_text(AUDITED)
    (tmp_path / "audit").mkdir(exist_ok=True)
    env = {**os.environ, "HFTL_TEST_OUT": config["training"]["output_dir"], "HFTL_TEST_AUDIT": str(tmp_path / "audit"),
           "HFTL_TEST_DIR": str(REPO / "tests"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO)}
    env.pop("ACCELERATE_CONFIG_FILE", None)
    processes = [subprocess.Popen([sys.executable, "-m", "accelerate.commands.launch", *args, str(probe), str(RECIPE),
                                   "--config", str(path)], env=env, cwd=str(REPO), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for args in launch_args]
    done = []
    for process in processes:
        try:
            out, err = process.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            for other in processes:
                other.kill()
            raise
        done.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    return done


def test_two_machines_on_loopback_match_one_process(ddp_setup):
    """Multi-node, simulated: two `accelerate launch` commands with recipes/accelerate/cpu_multi_node.yaml,
    --machine_rank 0 and 1, rendezvous on 127.0.0.1 (gloo): one run of world size 2, equal to one process."""
    tmp_path, make_config = ddp_setup
    config_file = str(REPO / "recipes" / "accelerate" / "cpu_multi_node.yaml")
    port = str(_free_port())
    machines = _launch_machines(tmp_path, make_config("ddp", per_device_batch=8), [
        ["--config_file", config_file, "--machine_rank", str(rank), "--main_process_port", port] for rank in (0, 1)])
    for machine in machines:
        assert machine.returncode == 0, machine.stderr[-4000:]
    _assert_matches_one_process(tmp_path, tmp_path / "ddp", _single_process_run(make_config))


def test_cpu_flag_with_two_machines_stops_instead_of_two_single_runs(ddp_setup):
    """`accelerate launch --cpu --num_machines 2 --num_processes 2 --machine_rank {0,1}` starts a plain process per
    command (world size 1 each): both stop before training with exit status 2, saying so; nothing is written."""
    tmp_path, make_config = ddp_setup
    port = str(_free_port())
    machines = _launch_machines(tmp_path, make_config("cpu-flag", per_device_batch=8), [
        ["--cpu", "--num_machines", "2", "--num_processes", "2", "--machine_rank", str(rank),
         "--main_process_ip", "127.0.0.1", "--main_process_port", port] for rank in (0, 1)])
    for machine in machines:  # accelerate turns its child's exit status 2 into a CalledProcessError (status 1)
        assert machine.returncode != 0 and "returned non-zero exit status 2" in machine.stderr, machine.stderr[-4000:]
        assert "error: accelerate launch asked for 2 processes on 2 machines, but this run has 1" in machine.stderr
        assert "recipes/accelerate/cpu_multi_node.yaml" in machine.stderr
        assert f'File "{REPO / "hftl"}' not in machine.stderr  # no traceback through hftl: accelerate's own only
    out = tmp_path / "cpu-flag"
    assert not out.exists() or not any(out.iterdir())


def test_sigterm_to_one_process_stops_both_at_the_same_step(ddp_setup):
    """A stop signal reaching one rank (a pre-empted node) stops every rank after the same step, with one
    checkpoint holding both RNG states, instead of leaving the others waiting in a collective."""
    tmp_path, make_config = ddp_setup
    config = make_config("ddp-stop", per_device_batch=8)
    proc = _launch_ddp(tmp_path, config, HFTL_TEST_SIGTERM_RANK="1", HFTL_TEST_SIGTERM_STEP="2")
    run_dir = tmp_path / "ddp-stop"
    assert proc.returncode != 0
    assert proc.stderr.count("training stopped by") == 2, proc.stderr[-4000:]
    assert "training stopped by SIGTERM at step 2 of 4" in proc.stderr  # rank 1: the signal it received
    assert "training stopped by a stop signal on another process at step 2 of 4" in proc.stderr  # rank 0
    from hftl.run_dir import RunDir

    assert RunDir.checkpoint_problem(run_dir / "checkpoint-2") is None
    assert {p.name for p in (run_dir / "checkpoint-2").glob("rng_state_*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}
    assert not (run_dir / "metrics.json").exists()
