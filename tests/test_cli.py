"""The command line and `accelerate launch` run the same recipe end to end on a tiny model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run(args, **kwargs):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=kwargs.pop("cwd", ROOT), **kwargs)


def write_config(tmp_path, config) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_help_lists_every_command():
    proc = run([sys.executable, "-m", "hftl.cli", "--help"])
    assert proc.returncode == 0
    for command in ("train", "validate", "evaluate", "demo", "models"):
        assert f"    {command}" in proc.stdout
    assert "examples:" in proc.stdout


def test_train_then_evaluate_through_cli(tmp_path, text_config, text_data):
    config_path = write_config(tmp_path, text_config(**{"training.num_train_epochs": 1}))
    proc = run([sys.executable, "-m", "hftl.cli", "train", str(config_path), "--set", "training.learning_rate=1e-2"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test: accuracy" in proc.stdout
    run_dir = tmp_path / "run"
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["training"]["learning_rate"] == 1e-2
    metrics = json.loads((run_dir / "metrics.json").read_text())

    proc = run([sys.executable, "-m", "hftl.cli", "evaluate", str(run_dir), "--data", str(text_data["test"]),
                "--output", str(tmp_path / "eval.json")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads((tmp_path / "eval.json").read_text())
    assert again["accuracy"] == metrics["test"]["accuracy"]

    # A second train into the same folder is refused, with the way out in the message.
    proc = run([sys.executable, "-m", "hftl.cli", "train", str(config_path)])
    assert proc.returncode == 2 and "--overwrite" in proc.stderr and "Traceback" not in proc.stderr


def test_accelerate_launch_single_process(tmp_path, text_config):
    config_path = write_config(tmp_path, text_config(**{"training.num_train_epochs": 1}))
    proc = run([str(BIN / "accelerate"), "launch", "--num_processes", "1", "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", "--cpu",
                str(ROOT / "recipes" / "text_classification.py"), "--config", str(config_path)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "run" / "metrics.json").is_file()
    assert "test: accuracy" in proc.stdout
