"""Faults survived, nothing lost: SIGKILL then --resume, SIGTERM/SIGINT stops, non-finite loss, partial checkpoints.

The reference is an uninterrupted run of the same config and seed; an interrupted-and-resumed run must end
with the same metrics and the same weights (within floating-point tolerance).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hftl.cli import main
from hftl.run_dir import RunDir
from tests.conftest import make_sentences, write_tsv
from tests.faults import signal_at_step

# 64 rows / batch 16 = 4 steps per epoch, 2 epochs = 8 steps, a checkpoint every 3 steps.
STEPS, SAVE_STEPS = 8, 3

# Launches `hftl` with a fault injected at a given step (HFTL_TEST_FAULT=action:step).
FAULTY_HFTL = """
import os, signal, sys
import transformers
from hftl.cli import main

action, step = os.environ["HFTL_TEST_FAULT"].split(":")
step = int(step)
if action == "sigkill-while-saving":
    # die after the weights and optimizer of checkpoint-<step> are written, before its RNG and trainer state
    original = transformers.Trainer._save_rng_state
    def _save_rng_state(self, output_dir):
        if self.state.global_step == step:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, output_dir)
    transformers.Trainer._save_rng_state = _save_rng_state
else:
    class Fault(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step:
                os.kill(os.getpid(), getattr(signal, action.upper()))
    original_init = transformers.Trainer.__init__
    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.add_callback(Fault())
    transformers.Trainer.__init__ = __init__
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def resume_config(tmp_path_factory, tiny_bert_dir):
    """make(name) writes a config whose run goes to <folder>/<name> and returns its path."""
    folder = tmp_path_factory.mktemp("resume")
    data = {
        "train": write_tsv(folder / "train.tsv", make_sentences(64, seed=1)),
        "validation": write_tsv(folder / "dev.tsv", make_sentences(20, seed=2)),
        "test": write_tsv(folder / "test.tsv", make_sentences(20, seed=3)),
    }

    def make(name: str) -> Path:
        config = {
            "task": "text-classification",
            "model": {"name_or_path": str(tiny_bert_dir), "strategy": "full"},
            "data": {**{k: str(v) for k, v in data.items()}, "text_column": "sentence", "max_length": 32},
            "training": {"output_dir": str(folder / name), "num_train_epochs": 2, "learning_rate": 5e-3,
                         "per_device_train_batch_size": 16, "seed": 7, "save_steps": SAVE_STEPS,
                         "save_total_limit": 3, "eval_strategy": "no", "logging_steps": 1},
            "speed": {"bf16": False},
        }
        path = folder / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    return make


@pytest.fixture(scope="module")
def reference_run(resume_config) -> Path:
    """An uninterrupted run of the same config and seed."""
    config = resume_config("reference")
    assert main(["train", str(config)]) == 0
    return config.parent / "reference"


def _faulty_run(config: Path, fault: str, *extra) -> subprocess.CompletedProcess:
    env = {**os.environ, "HFTL_TEST_FAULT": fault, "HF_HUB_OFFLINE": "1"}
    script = config.parent / "faulty_hftl.py"
    script.write_text(FAULTY_HFTL)
    return subprocess.run([sys.executable, str(script), "train", str(config), *extra], capture_output=True, text=True,
                          env=env, cwd=str(Path(__file__).resolve().parent.parent), timeout=300)


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def _assert_same_run(resumed: Path, reference: Path):
    import torch
    from safetensors.torch import load_file

    got, want = _metrics(resumed), _metrics(reference)
    for split in ("validation", "test"):
        assert got[split]["confusion_matrix"] == want[split]["confusion_matrix"], split
        for key in ("accuracy", "f1", "loss"):
            assert got[split][key] == pytest.approx(want[split][key], rel=1e-4, abs=1e-6), (split, key)
    a, b = load_file(resumed / "model.safetensors"), load_file(reference / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4, msg=name)


def test_sigkill_while_saving_then_resume_matches_uninterrupted_run(resume_config, reference_run, capsys, caplog):
    killed_cfg = resume_config("killed")
    killed = killed_cfg.parent / "killed"
    # Killed while writing checkpoint-6: checkpoint-3 is complete, checkpoint-6 is partial.
    proc = _faulty_run(killed_cfg, "sigkill-while-saving:6")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert RunDir.checkpoint_problem(killed / "checkpoint-3") is None
    assert (killed / "checkpoint-6" / "model.safetensors").is_file()
    assert "trainer_state.json" in RunDir.checkpoint_problem(killed / "checkpoint-6")
    assert not (killed / "metrics.json").exists()
    # Stock transformers would pick the partial checkpoint-6 and fail; hftl skips it.
    assert RunDir(killed).last_checkpoint().endswith("checkpoint-3")

    # Rerunning without --resume is refused and points at the checkpoint.
    assert main(["train", str(killed_cfg)]) == 2
    assert "last complete checkpoint: checkpoint-3" in capsys.readouterr().err

    assert main(["train", str(killed_cfg), "--resume"]) == 0
    assert "Skipping incomplete checkpoint" in caplog.text and "Resuming from" in caplog.text
    _assert_same_run(killed, reference_run)
    state = json.loads((killed / "trainer_state.json").read_text())
    assert state["global_step"] == STEPS


def test_sigterm_saves_checkpoint_says_how_to_resume_and_resumes(resume_config, reference_run):
    config = resume_config("stopped")
    run_dir = config.parent / "stopped"
    # SIGTERM arrives at the end of step 2: the run saves checkpoint-2 and exits with status 130 and a
    # one-line message saying how to resume.
    proc = _faulty_run(config, "sigterm:2")
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    message = proc.stderr.strip().splitlines()[-1]
    assert f"training stopped by SIGTERM at step 2 of {STEPS}" in message
    assert "resume: true" in message
    assert RunDir.checkpoint_problem(run_dir / "checkpoint-2") is None
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "model.safetensors").exists()
    assert main(["train", str(config), "--resume"]) == 0
    _assert_same_run(run_dir, reference_run)


def test_sigint_in_process_stops_cleanly(resume_config, monkeypatch, capsys):
    """Ctrl-C: same clean stop inside a Python session, handlers restored afterwards."""
    import transformers

    monkeypatch.setattr(transformers.Trainer, "__init__", transformers.Trainer.__init__)  # restored after the test
    signal_at_step(signal.SIGINT, 1, "on_step_begin")
    before = signal.getsignal(signal.SIGINT)
    config = resume_config("ctrl-c")
    assert main(["train", str(config)]) == 130
    err = capsys.readouterr().err
    assert f"training stopped by SIGINT at step 2 of {STEPS}" in err and "Traceback" not in err
    assert RunDir.checkpoint_problem(config.parent / "ctrl-c" / "checkpoint-2") is None
    assert signal.getsignal(signal.SIGINT) is before


def test_resume_command_is_the_same_command_with_resume():
    from hftl.callbacks import resume_command

    assert resume_command(["/venv/bin/hftl", "train", "my run.yaml", "--overwrite", "--set", "a.b=1"]) == (
        "hftl train 'my run.yaml' --set a.b=1 --resume")
    assert resume_command(["hftl", "train", "c.yaml", "--resume"]) == "hftl train c.yaml --resume"
    assert "resume: true" in resume_command(["recipes/text_classification.py", "--config", "c.yaml"])


def test_non_finite_loss_stops_naming_the_step_and_keeps_last_good_checkpoint(resume_config, monkeypatch, capsys):
    import torch
    from transformers import Trainer

    original = Trainer.compute_loss

    def compute_loss(self, model, inputs, *args, **kwargs):
        loss = original(self, model, inputs, *args, **kwargs)
        if self.state.global_step == 4:  # the 5th optimizer step
            loss = loss * torch.tensor(float("nan"))
        return loss

    monkeypatch.setattr(Trainer, "compute_loss", compute_loss)
    before = signal.getsignal(signal.SIGINT)
    config = resume_config("nan")
    run_dir = config.parent / "nan"
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err
    assert "the training loss became nan at step 5" in err
    assert "nothing after step 4 was saved" in err
    assert f"The last good checkpoint is {run_dir / 'checkpoint-3'}" in err
    assert signal.getsignal(signal.SIGINT) is before, "the error left hftl's signal handler installed"
    assert "Traceback" not in err
    assert sorted(p.name for p in run_dir.glob("checkpoint-*")) == ["checkpoint-3"]
    assert not (run_dir / "model.safetensors").exists() and not (run_dir / "metrics.json").exists()
    from safetensors.torch import load_file

    weights = load_file(run_dir / "checkpoint-3" / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_partial_checkpoints_are_never_taken(tmp_path):
    def checkpoint(step, state='{"global_step": %d}', weights=True):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if state is not None:
            (folder / "trainer_state.json").write_text(state % step if "%d" in state else state)
        if weights:
            (folder / "model.safetensors").write_bytes(b"x")
        return folder

    assert RunDir(tmp_path).last_checkpoint() is None
    checkpoint(2)
    checkpoint(4, state='{"global_step": 4, "log_hist')  # cut off while writing
    checkpoint(6, state=None)  # killed before the state was written
    checkpoint(8, weights=False)
    (tmp_path / "checkpoint-10").write_text("not a folder")
    (tmp_path / "checkpoint-x").mkdir()
    assert RunDir(tmp_path).last_checkpoint() == str(tmp_path / "checkpoint-2")
    assert "cut off" in RunDir.checkpoint_problem(tmp_path / "checkpoint-4")
    assert "no model weights" in RunDir.checkpoint_problem(tmp_path / "checkpoint-8")


def test_save_steps_alone_sets_the_checkpoint_interval(text_config):
    from hftl import load_config
    from hftl.trainer import training_arguments

    args = training_arguments(load_config(text_config(**{"training.save_steps": 5})))
    assert args.save_strategy == "steps" and args.save_steps == 5
    assert training_arguments(load_config(text_config())).save_strategy == "epoch"
    assert args.logging_nan_inf_filter is False
