"""`hftl predict` (text lines, CSV/JSONL columns, stdin -> JSONL/CSV) and `hftl export --merged`."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest
import yaml

from tiny_runs import TEXTS, train_tiny_run


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_bert_dir):
    return train_tiny_run(tmp_path_factory.mktemp("predict_lora"), tiny_bert_dir, **{"model.strategy": "lora"})


@pytest.fixture(scope="module")
def expected(lora_run):
    from hftl import load

    return load(lora_run.run_dir).predict(TEXTS)


@pytest.fixture(scope="module")
def merged_dir(lora_run, tmp_path_factory):
    from hftl.cli import main

    out = tmp_path_factory.mktemp("export") / "merged"
    assert main(["export", str(lora_run.run_dir), "--merged", str(out)]) == 0
    return out


# -- export --------------------------------------------------------------------------------------------
def test_merged_export_loads_with_pipeline_without_hftl(merged_dir, expected):
    """A plain transformers folder: `pipeline(...)` in a process where hftl cannot be imported."""
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md"} <= {p.name for p in merged_dir.iterdir()}
    assert not (merged_dir / "adapter_config.json").exists()
    code = (
        "import json, sys\n"
        "sys.modules['hftl'] = None  # importing hftl now fails\n"
        "from transformers import pipeline\n"
        f"classify = pipeline('text-classification', model={str(merged_dir)!r}, top_k=None)\n"
        f"print(json.dumps([{{d['label']: d['score'] for d in r}} for r in classify({TEXTS!r})]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    # pipeline() knows nothing of the temperature hftl fitted on validation (docs/classification.md): it gives the
    # model's own softmax, which hftl's predict calibrates
    from hftl import load
    from hftl.calibration import apply_temperature

    run = load(merged_dir)
    raw = apply_temperature(run.recipe.predict_logits(run.model, run.processor, TEXTS, 8), 1.0)
    for probabilities, want in zip(got, raw):
        assert probabilities == pytest.approx(dict(zip(run.labels.names, map(float, want))), abs=1e-5)
    temperature = json.loads((merged_dir / "calibration.json").read_text()).get("temperature") or 1.0
    calibrated = apply_temperature(run.recipe.predict_logits(run.model, run.processor, TEXTS, 8), temperature)
    for prediction, want in zip(expected, calibrated):
        assert list(prediction["probabilities"].values()) == pytest.approx(list(map(float, want)), abs=1e-5)


def test_merged_export_is_an_hftl_run_too(merged_dir, expected, tmp_path_factory):
    from huggingface_hub import ModelCard

    from hftl import load

    got = load(merged_dir).predict(TEXTS)
    for g, w in zip(got, expected):
        assert g["label"] == w["label"] and g["score"] == pytest.approx(w["score"], abs=1e-5)
    config = (merged_dir / "config.yaml").read_text()
    assert str(tmp_path_factory.getbasetemp()) not in config
    assert yaml.safe_load(config)["data"]["test"].endswith("test.tsv")
    card = ModelCard.load(merged_dir / "README.md")
    assert card.data.library_name == "transformers"
    assert "merged into its weights" in card.text


def test_export_refuses_a_non_empty_folder(lora_run, merged_dir, capsys):
    from hftl.cli import main

    assert main(["export", str(lora_run.run_dir), "--merged", str(merged_dir)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export", str(lora_run.run_dir), "--merged", str(lora_run.run_dir / "inside")]) == 2


# -- predict -------------------------------------------------------------------------------------------
def test_predict_text_lines_to_jsonl(lora_run, expected, tmp_path, capsys):
    from hftl.cli import main

    source = tmp_path / "inputs.txt"
    source.write_text("\n".join(TEXTS) + "\n\n")  # blank lines are skipped
    assert main(["predict", str(lora_run.run_dir), "--input", str(source), "--batch-size", "3"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["input"] for r in rows] == TEXTS
    for row, want in zip(rows, expected):
        assert row["label"] == want["label"]
        assert row["score"] == pytest.approx(want["score"], abs=1e-6)
        assert row["probabilities"] == pytest.approx(want["probabilities"], abs=1e-6)


def test_predict_csv_column_to_csv(lora_run, expected, tmp_path):
    from hftl.cli import main

    source = tmp_path / "inputs.csv"
    with source.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "sentence"])  # the run's text column is found by itself
        writer.writerows([[i, text] for i, text in enumerate(TEXTS)])
    output = tmp_path / "predictions.csv"
    assert main(["predict", str(lora_run.run_dir), "--input", str(source), "--output", str(output)]) == 0
    rows = list(csv.DictReader(output.open()))
    assert list(rows[0]) == ["input", "label", "score", "prob_neg", "prob_pos"]
    assert [r["label"] for r in rows] == [w["label"] for w in expected]
    assert float(rows[0]["prob_pos"]) == pytest.approx(expected[0]["probabilities"]["pos"], abs=1e-6)


def test_predict_jsonl_column_and_stdin(lora_run, expected, tmp_path, capsys, monkeypatch):
    from hftl.cli import main

    source = tmp_path / "inputs.jsonl"
    source.write_text("".join(json.dumps({"review": t, "stars": 3}) + "\n" for t in TEXTS))
    output = tmp_path / "out.jsonl"
    assert main(["predict", str(lora_run.run_dir), "--input", str(source), "--column", "review",
                 "--output", str(output)]) == 0
    assert [json.loads(line)["label"] for line in output.read_text().splitlines()] == [w["label"] for w in expected]

    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(TEXTS)))
    assert main(["predict", str(lora_run.run_dir), "--input", "-", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["input"] for r in rows] == TEXTS


def test_predict_input_errors(lora_run, tmp_path, capsys):
    from hftl.cli import main

    source = tmp_path / "inputs.csv"
    source.write_text("id,review\n1,great\n")
    assert main(["predict", str(lora_run.run_dir), "--input", str(source), "--column", "reveiw"]) == 2
    assert "did you mean 'review'" in capsys.readouterr().err.lower()
    assert main(["predict", str(lora_run.run_dir), "--input", str(tmp_path / "missing.txt")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_loading_a_lora_run_reports_no_missing_head(lora_run):
    """The base's head is restored from the adapter: transformers' "MISSING ... newly initialized" report would
    tell the user something false. (A subprocess: transformers' log handler keeps the stderr it started with.)"""
    code = f"import hftl; hftl.load({str(lora_run.run_dir)!r})"
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stderr
    assert "LOAD REPORT" not in err and "newly initialized" not in err


def test_adapter_config_lists_each_module_to_save_once(lora_run):
    saved = json.loads((lora_run.run_dir / "adapter_config.json").read_text())["modules_to_save"]
    assert "classifier" in saved and len(saved) == len(set(saved))
