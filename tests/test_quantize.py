"""Int8 ONNX export (hftl.quantize): it measures itself on the run's held-out split, refuses beyond --max-drop,
is served by `hftl predict` / `hftl.load` with the run's decisions, and runs without torch."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")

from hftl.cli import main as hftl_main  # noqa: E402
from hftl.runner import run_recipe  # noqa: E402
from tiny_runs import TEXTS, train_tiny_run  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_run(tiny_bert_dir, tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("quantize"), tiny_bert_dir, **{"data.threshold": "tuned", "data.positive_label": "neg"})


@pytest.fixture(scope="module")
def int8_dir(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "out"
    assert hftl_main(["export", str(tiny_run.run_dir), "--onnx", str(out), "--quantize", "int8",
                      "--max-drop", "100"]) == 0
    return out


def test_export_measures_itself_on_the_run_test_split(tiny_run, int8_dir):
    figures = json.loads((int8_dir / "quantization.json").read_text(encoding="utf-8"))
    assert figures["metric"] == "accuracy" and figures["split"] == "test" and figures["examples"] == 32
    rows = figures["models"]
    assert list(rows) == ["float32 (PyTorch)", "float32 ONNX", "int8 ONNX"]
    # the float32 row is the run's own evaluation: the test accuracy metrics.json recorded at training time
    assert rows["float32 (PyTorch)"]["metric"] == pytest.approx(tiny_run.metrics["test"]["accuracy"])
    assert rows["float32 ONNX"]["label_agreement"] == 1.0
    # the int8 row against an independent count: its served labels beside the float32 run's, and beside gold
    import csv

    import hftl

    with open(tiny_run.config.data.test, newline="", encoding="utf-8") as handle:
        test_rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    texts, gold = [r["sentence"] for r in test_rows], [r["label"] for r in test_rows]
    float_labels = [row["label"] for row in hftl.load(tiny_run.run_dir).predict(texts)]
    int8_labels = [row["label"] for row in hftl.load(int8_dir).predict(texts)]
    agreement = sum(a == b for a, b in zip(float_labels, int8_labels)) / len(texts)
    assert rows["int8 ONNX"]["label_agreement"] == pytest.approx(agreement)
    assert rows["int8 ONNX"]["metric"] == pytest.approx(sum(a == b for a, b in zip(int8_labels, gold)) / len(gold))
    assert figures["drop_points"] == pytest.approx(
        100 * (rows["float32 (PyTorch)"]["metric"] - rows["int8 ONNX"]["metric"]), abs=1e-6)
    assert all(row["size_mb"] > 0 and row["examples_per_second"] > 0 for row in rows.values())
    record = json.loads((int8_dir / "onnx_export.json").read_text(encoding="utf-8"))
    assert record["quantization"]["weights"] == "int8" and record["max_length"] == 32
    card = (int8_dir / "README.md").read_text(encoding="utf-8")
    assert "## Deployment" in card and "| int8 ONNX |" in card and "label agreement" in card


def test_int8_weights_are_int8(int8_dir):
    import onnx

    model = onnx.load(str(int8_dir / "model.onnx"))
    kinds = {init.data_type for init in model.graph.initializer}
    assert onnx.TensorProto.INT8 in kinds
    assert any(node.op_type in ("MatMulInteger", "DynamicQuantizeMatMul", "DynamicQuantizeLinear")
               for node in model.graph.node)


def test_predict_and_load_serve_it_with_the_run_decisions(tiny_run, int8_dir, tmp_path, capsys):
    import hftl

    loaded = hftl.load(int8_dir)
    assert type(loaded.model).__name__ == "OnnxClassifier"
    assert loaded.decisions.threshold is not None  # the run's tuned binary threshold is applied
    expected = loaded.predict(TEXTS)
    (tmp_path / "in.txt").write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    assert hftl_main(["predict", str(int8_dir), "--input", str(tmp_path / "in.txt")]) == 0
    got = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["label"] for row in got] == [row["label"] for row in expected]
    float_labels = [row["label"] for row in hftl.load(tiny_run.run_dir).predict(TEXTS)]
    assert sum(a["label"] == b for a, b in zip(expected, float_labels)) >= len(TEXTS) - 1


def _damaging_quantizer(real):
    """`quantize_dynamic` that then flips the sign of the classifier's weights: a quantization gone wrong."""
    def quantize(model_input, model_output, **kwargs):
        import numpy as np
        import onnx
        from onnx import numpy_helper

        real(model_input, model_output, **kwargs)
        model = onnx.load(str(model_output))
        for init in model.graph.initializer:
            if "classifier" in init.name:
                init.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(init).astype(np.float32)
                                                      if init.data_type == onnx.TensorProto.FLOAT else
                                                      numpy_helper.to_array(init), init.name))
        onnx.save(model, str(model_output))
    return quantize


def test_max_drop_refuses_with_exit_2_and_the_figures(tiny_run, tmp_path, capsys, monkeypatch):
    import onnxruntime.quantization as quantization

    monkeypatch.setattr(quantization, "quantize_dynamic", _damaging_quantizer(quantization.quantize_dynamic))
    out = tmp_path / "refused"
    code = hftl_main(["export", str(tiny_run.run_dir), "--onnx", str(out), "--quantize", "int8", "--max-drop", "5"])
    err = capsys.readouterr().err
    assert code == 2
    drop = float(re.search(r"accuracy is ([\d.]+) points below", err).group(1))
    assert drop > 5
    assert "| int8 ONNX |" in err and "| float32 (PyTorch) |" in err
    assert not out.exists()  # nothing a later `hftl predict` could serve by mistake


def test_quantize_needs_onnx_and_max_drop_needs_quantize(tiny_run, tmp_path, capsys):
    assert hftl_main(["export", str(tiny_run.run_dir), "--merged", str(tmp_path / "m"), "--quantize", "int8"]) == 2
    assert "--quantize applies to --onnx" in capsys.readouterr().err
    assert hftl_main(["export", str(tiny_run.run_dir), "--onnx", str(tmp_path / "o"), "--max-drop", "1"]) == 2
    assert "--max-drop applies with --quantize" in capsys.readouterr().err


def test_other_tasks_are_refused_with_the_reason(tmp_path):
    from hftl.errors import HftlError
    from hftl.quantize import check_quantizable

    (tmp_path / "train.txt").write_text("some text\n", encoding="utf-8")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text(
        "task: masked-lm\nmodel: {name_or_path: x}\ndata: {train: ../train.txt}\ntraining: {output_dir: .}\n",
        encoding="utf-8")
    with pytest.raises(HftlError, match="supports text and token classification runs.*'masked-lm' run"):
        check_quantizable(tmp_path / "run")


BLOCK_TORCH = '''
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is not installed here")
sys.meta_path.insert(0, _NoTorch())
'''


def test_the_documented_snippet_serves_int8_without_torch(int8_dir, tmp_path, capsys):
    docs = (REPO / "docs" / "deployment.md").read_text(encoding="utf-8")
    snippet = re.search(r"<!-- serving-snippet:start -->\n```python\n(.*?)```", docs, re.S).group(1)
    (tmp_path / "blocker").mkdir()
    (tmp_path / "blocker" / "sitecustomize.py").write_text(BLOCK_TORCH, encoding="utf-8")
    texts = TEXTS + ["the plot was dismal and the acting clumsy", "wonderful", "a film"]
    script = snippet + f'''
try:
    import torch
    raise SystemExit("torch was importable")
except ImportError:
    pass
print(json.dumps([row["label"] for row in predict({str(int8_dir)!r}, {texts!r})]))
assert "torch" not in sys.modules
'''
    (tmp_path / "serve.py").write_text("import sys\n" + script, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "blocker")}
    done = subprocess.run([sys.executable, str(tmp_path / "serve.py")], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    assert hftl_main(["predict", str(int8_dir), "--input", str(tmp_path / "in.txt")]) == 0
    expected = [json.loads(line)["label"] for line in capsys.readouterr().out.splitlines()]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == expected


def test_token_classification_run(tiny_bert_dir, tmp_path):
    from hftl import TokenClassificationRecipe
    from hftl.quantize import export_int8
    from test_token_classification import make_sentences, write_conll

    data = {name: str(write_conll(tmp_path / f"{name}.txt", make_sentences(n, seed=seed)))
            for name, n, seed in (("train", 32, 1), ("validation", 11, 2), ("test", 13, 3))}
    result = run_recipe(TokenClassificationRecipe({
        "model": {"name_or_path": str(tiny_bert_dir), "strategy": "full"},
        "data": {**data, "max_length": 32, "stride": 8},
        "training": {"output_dir": str(tmp_path / "run"), "max_steps": 6, "learning_rate": 5e-3,
                     "per_device_train_batch_size": 16, "seed": 42},
        "speed": {"bf16": False}}))
    figures = export_int8(result.run_dir, tmp_path / "int8", max_drop=None)
    assert figures["metric"] == "f1" and figures["split"] == "test"
    assert figures["models"]["float32 (PyTorch)"]["metric"] == pytest.approx(result.metrics["test"]["f1"])
    assert figures["models"]["float32 ONNX"]["label_agreement"] == 1.0  # per labelled token
    import hftl

    words = [["alice", "went", "to", "rome"], ["the", "film", "carol"]]
    assert [set(row) for row in hftl.load(tmp_path / "int8").predict(words)] == [{"tags", "scores"}] * 2


def test_deployment_benchmark_runs(tiny_run, int8_dir, tmp_path, capsys):
    """benchmarks/deploy.py in miniature: every row measured, accuracy from the same labels hftl predict gives."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("deploy_benchmark", REPO / "benchmarks" / "deploy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--teacher", str(tiny_run.run_dir), "--teacher-int8", str(int8_dir), "--repeats", "1",
                        "--latency-n", "3", "--json", str(tmp_path / "deploy.json")]) == 0
    out = capsys.readouterr().out
    assert "| teacher int8 ONNX |" in out and "| pipeline() on the teacher |" in out and "machine:" in out
    rows = json.loads((tmp_path / "deploy.json").read_text())["rows"]
    assert rows["teacher float32 (PyTorch, hftl predict)"]["accuracy"] == pytest.approx(
        tiny_run.metrics["test"]["accuracy"])
    assert all(row["texts_per_second"] > 0 and row["latency_p95_ms"] >= row["latency_p50_ms"] for row in rows.values())


@pytest.mark.parametrize("problem", ["multi_label_classification", "regression"])
def test_multi_label_and_regression_runs(tiny_bert_dir, tmp_path, problem):
    import hftl
    from conftest import make_sentences, write_tsv
    from hftl.quantize import export_int8

    def label(text, sentiment, i):
        if problem == "regression":
            return f"{(4.0 if sentiment == 'pos' else 1.0) + (i % 5) / 10:.1f}"
        return json.dumps([sentiment] + (["long"] if len(text.split()) > 5 else []))

    data = {}
    for name, n, seed in (("train", 64, 1), ("dev", 24, 2), ("test", 24, 3)):
        rows = [(text, label(text, sentiment, i)) for i, (text, sentiment) in enumerate(make_sentences(n, seed=seed))]
        data[name] = write_tsv(tmp_path / f"{name}.tsv", rows)
    result = run_recipe(hftl.TextClassificationRecipe({
        "model": {"name_or_path": str(tiny_bert_dir), "strategy": "full"},
        "data": {"train": str(data["train"]), "validation": str(data["dev"]), "test": str(data["test"]),
                 "text_column": "sentence", "label_column": "label", "max_length": 32, "problem_type": problem},
        "training": {"output_dir": str(tmp_path / "run"), "num_train_epochs": 2, "learning_rate": 5e-3,
                     "per_device_train_batch_size": 16, "seed": 42},
        "speed": {"bf16": False}}))
    figures = export_int8(result.run_dir, tmp_path / "int8", max_drop=None)
    metric = {"regression": "pearson", "multi_label_classification": "f1_macro"}[problem]
    rows = figures["models"]
    assert figures["metric"] == metric
    assert rows["float32 (PyTorch)"]["metric"] == pytest.approx(result.metrics["test"][metric])
    if problem == "regression":  # no labels to agree on: the largest score difference instead
        assert rows["float32 ONNX"]["label_agreement"] is None
        assert rows["float32 ONNX"]["max_abs_score_difference"] < 1e-3
    else:
        assert rows["float32 ONNX"]["label_agreement"] == 1.0
    served = hftl.load(tmp_path / "int8").predict(TEXTS)
    assert set(served[0]) == ({"score"} if problem == "regression" else {"labels", "probabilities"})
