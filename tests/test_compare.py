"""`hftl compare`: the table, the config diff, seed groups' mean ± std and the written files, on tiny runs."""

from __future__ import annotations

import csv
import statistics

import pytest
import yaml

from conftest import make_sentences, write_tsv
from hftl.run_dir import RunDir

pytestmark = pytest.mark.usefixtures("one_thread")


def _config(tmp, model_dir, output, **training):
    data = {name: write_tsv(tmp / f"{name}.tsv", make_sentences(n, seed=seed))
            for name, n, seed in (("train", 64, 1), ("dev", 24, 2), ("test", 24, 3))}
    return {
        "task": "text-classification",
        "model": {"name_or_path": str(model_dir), "strategy": "full"},
        "data": {"train": str(data["train"]), "validation": str(data["dev"]), "test": str(data["test"]),
                 "text_column": "sentence", "label_column": "label", "max_length": 32},
        "training": {"output_dir": str(tmp / output), "num_train_epochs": 2, "learning_rate": 5e-3,
                     "per_device_train_batch_size": 16, "seed": 42, "logging_steps": 2, **training},
        "speed": {"bf16": False},
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_bert_dir):
    """Two single runs differing in learning rate and strategy, and a 2-seed group of the first's config."""
    from hftl.cli import main

    tmp = tmp_path_factory.mktemp("compare")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_DATASETS_CACHE", str(tmp / "cache"))
        paths = {}
        for name, changes in (("run-a", {}), ("run-b", {"learning_rate": 1e-2})):
            config = _config(tmp, tiny_bert_dir, name, **changes)
            if name == "run-b":
                config["model"]["strategy"] = "lora"
            (tmp / f"{name}.yaml").write_text(yaml.safe_dump(config))
            assert main(["train", str(tmp / f"{name}.yaml")]) == 0
            paths[name] = tmp / name
        (tmp / "group.yaml").write_text(yaml.safe_dump(_config(tmp, tiny_bert_dir, "group")))
        assert main(["train", str(tmp / "group.yaml"), "--seeds", "2"]) == 0
        paths["group"] = tmp / "group"
    return paths


def test_table_rows_and_diff(runs):
    from hftl.compare import compare_runs

    comparison = compare_runs([runs["run-a"], runs["run-b"], runs["group"]])
    assert [r["run"] for r in comparison.rows] == ["run-a", "run-b", "group"]
    assert [r["strategy"] for r in comparison.rows] == ["full", "lora", "full"]
    assert [r["seeds"] for r in comparison.rows] == [1, 1, 2]
    assert {r["task"] for r in comparison.rows} == {"text-classification"}
    # only what differs is in the diff; output folders are never a difference
    assert comparison.config_diff["training.learning_rate"] == [5e-3, 1e-2, 5e-3]
    assert comparison.config_diff["model.strategy"] == ["full", "lora", "full"]
    assert comparison.config_diff["training.seed"] == [42, 42, "42, 43"]
    assert "data.max_length" not in comparison.config_diff
    assert "training.output_dir" not in comparison.config_diff
    assert "training.learning_rate" in comparison.hyperparameters
    assert "model.strategy" not in comparison.hyperparameters  # its own column
    # single runs: the values of their metrics.json
    for name, row in zip(("run-a", "run-b"), comparison.rows):
        metrics = RunDir(runs[name]).metrics()
        assert row["validation_f1"] == pytest.approx(metrics["validation"]["f1"])
        assert row["test_accuracy"] == pytest.approx(metrics["test"]["accuracy"])
        assert row["trainable_params"] == metrics["train"]["trainable_params"]
        assert row["train_time_s"] == pytest.approx(metrics["train"]["train_runtime"])
    assert comparison.rows[1]["trainable_params"] < comparison.rows[0]["trainable_params"]  # LoRA trains less
    # the seed group: mean and sample std of its seeds' own metrics, computed here independently
    seeds = [RunDir(runs["group"] / f"seed-{s}").metrics() for s in (42, 43)]
    group = comparison.rows[2]
    values = [m["test"]["f1"] for m in seeds]
    assert group["test_f1"] == pytest.approx(statistics.fmean(values))
    assert group["test_f1_std"] == pytest.approx(statistics.stdev(values))
    # curves: each row's log history, with its evaluations
    assert comparison.curves[0] == RunDir(runs["run-a"]).trainer_state()["log_history"]
    assert comparison.curves[2] == RunDir(runs["group"] / "seed-42").trainer_state()["log_history"]
    assert any("eval_f1" in e for e in comparison.curves[1])


def test_identical_configs_have_an_empty_diff(runs):
    from hftl.compare import compare_runs

    comparison = compare_runs([runs["run-a"], runs["group"] / "seed-42"])
    assert comparison.config_diff == {}
    assert "identical" in comparison.markdown()


def test_write_and_cli(runs, tmp_path, capsys):
    from hftl.cli import main
    from hftl.compare import compare_runs

    comparison = compare_runs([runs["run-a"], runs["group"]])
    files = comparison.write(tmp_path / "out")
    assert {"markdown", "csv", "curves"} <= set(files)
    assert files["curves"].stat().st_size > 1000
    rows = list(csv.DictReader(files["csv"].open(encoding="utf-8")))
    assert [r["run"] for r in rows] == ["run-a", "group"]
    assert float(rows[1]["test_f1"]) == pytest.approx(comparison.rows[1]["test_f1"])
    assert float(rows[1]["test_f1_std"]) == pytest.approx(comparison.rows[1]["test_f1_std"])
    markdown = files["markdown"].read_text(encoding="utf-8")
    assert " ± " in markdown and "## Config diff" in markdown and "curves.png" in markdown

    assert main(["compare", str(runs["run-a"]), str(runs["run-b"]), "--output", str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out
    assert "run-a" in out and "run-b" in out and "training.learning_rate: 0.005 | 0.01" in out
    assert (tmp_path / "cli" / "comparison.md").is_file()


def test_a_folder_of_runs_expands_in_natural_order(runs, tmp_path):
    from hftl.compare import compare_runs

    # the seed group's folder is itself a group; its parent folder holds runs and the group
    comparison = compare_runs([runs["run-a"].parent])
    names = [r["run"] for r in comparison.rows]
    assert names[:2] == ["group", "run-a"] and "run-b" in names


def test_not_a_run(tmp_path):
    from hftl.compare import compare_runs
    from hftl.errors import HftlError

    with pytest.raises(HftlError, match="holds no hftl run"):
        compare_runs([tmp_path])
