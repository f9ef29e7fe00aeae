"""ONNX export (hftl.onnx_export): the exported model predicts what the PyTorch model predicts."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from hftl.batch_inference import uncalibrated_probabilities  # noqa: E402
from hftl.errors import HftlError, OutputExistsError  # noqa: E402
from hftl.onnx_export import EXPORT_RECORD, OnnxClassifier, export_onnx, is_onnx_folder  # noqa: E402
from hftl.runner import run_recipe
from tests.test_batch_inference import varied_texts  # noqa: E402


@pytest.fixture(scope="module")
def classifier_dir(tiny_bert_dir, tmp_path_factory):
    """A saved tiny BERT classifier with a run's labels.json beside it."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    out = tmp_path_factory.mktemp("classifier")
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=3)
    with torch.no_grad():  # weights sharper than the initialisation's, so that the predicted labels vary
        for name, weight in model.named_parameters():
            if weight.dim() == 2 and "embeddings" not in name:
                weight.normal_(0, 0.5)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(out)
    (out / "labels.json").write_text(json.dumps({"id2label": {"0": "neg", "1": "neu", "2": "pos"},
                                                 "label2id": {"neg": 0, "neu": 1, "pos": 2}}), encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def exported(classifier_dir, tmp_path_factory):
    return export_onnx(classifier_dir, tmp_path_factory.mktemp("onnx") / "out")


def test_onnx_predictions_equal_pytorch(classifier_dir, exported):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(classifier_dir)
    tokenizer = AutoTokenizer.from_pretrained(classifier_dir)
    texts = varied_texts(40)
    expected = np.concatenate([p for _, p in uncalibrated_probabilities(model, tokenizer, texts, bf16=False,
                                                                        progress=False)])
    onnx = OnnxClassifier(exported)
    chunks = list(onnx.uncalibrated_probabilities(texts, token_budget=150, chunk_size=16, progress=False))
    assert [text for chunk, _ in chunks for text in chunk] == texts
    got = np.concatenate([p for _, p in chunks])
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert (got.argmax(-1) == expected.argmax(-1)).all()
    assert len(set(got.argmax(-1))) > 1  # the check means something only if the labels vary
    pairs = list(zip(texts[:9], texts[9:18]))
    expected_pairs = next(uncalibrated_probabilities(model, tokenizer, pairs, bf16=False, progress=False))[1]
    got_pairs = next(onnx.uncalibrated_probabilities(pairs, progress=False))[1]
    np.testing.assert_allclose(got_pairs, expected_pairs, atol=1e-4)


def test_export_folder_holds_tokenizer_labels_and_record(exported):
    assert is_onnx_folder(exported)
    record = json.loads((exported / EXPORT_RECORD).read_text(encoding="utf-8"))
    assert record["logits_per"] == "text" and record["max_abs_logit_difference"] <= 1e-4
    assert {"input_ids", "attention_mask"} <= set(record["inputs"])
    onnx = OnnxClassifier(exported)
    assert onnx.label_names == ["neg", "neu", "pos"]  # from the run's labels.json
    rows = onnx.predict(["great film", "boring plot"])
    assert [set(row) for row in rows] == [{"label", "score", "probabilities"}] * 2
    assert all(row["label"] == max(row["probabilities"], key=row["probabilities"].get) for row in rows)


def test_token_classification_export(tiny_bert_dir, tmp_path):
    import onnxruntime
    import torch
    from transformers import AutoTokenizer, BertForTokenClassification

    torch.manual_seed(0)
    BertForTokenClassification.from_pretrained(tiny_bert_dir, num_labels=5).save_pretrained(tmp_path / "model")
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    tokenizer.save_pretrained(tmp_path / "model")
    out = export_onnx(tmp_path / "model", tmp_path / "onnx", logits_per="token")
    batch = tokenizer(varied_texts(6), padding=True, return_tensors="pt")
    model = BertForTokenClassification.from_pretrained(tmp_path / "model")
    with torch.no_grad():
        expected = model(**batch).logits.numpy()
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {name: array.numpy() for name, array in batch.items()})[0]
    mask = batch["attention_mask"].numpy().astype(bool)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got[mask], expected[mask], atol=1e-4)
    with pytest.raises(HftlError, match="is a token classifier: predict with the run's recipe"):
        OnnxClassifier(out).predict(["a text"])


def test_export_refuses_non_empty_output_and_non_model_folders(classifier_dir, exported, tmp_path):
    with pytest.raises(OutputExistsError, match="is not empty"):
        export_onnx(classifier_dir, exported)
    with pytest.raises(HftlError, match="holds no transformers model"):
        export_onnx(tmp_path, tmp_path / "out")
    with pytest.raises(HftlError, match="logits_per must be one of text, token"):
        export_onnx(classifier_dir, tmp_path / "out2", logits_per="image")
    with pytest.raises(HftlError, match="is not an ONNX export"):
        OnnxClassifier(classifier_dir)


@pytest.mark.parametrize("kind", ["multi-label", "bounded-regression"])
def test_onnx_predict_applies_the_runs_decisions(kind, tmp_path, tiny_bert_dir):
    """An exported multi-label or regression run predicts what `hftl.load(run).predict` does: its sigmoid,
    temperature and per-label thresholds, or its scores in data.score_range, not a softmax over the outputs."""
    from conftest import write_tsv
    from hftl import TextClassificationRecipe
    import torch

    from hftl.inference import load
    from tests.test_classification_options import _config, _multilabel_rows, _pair_rows

    if kind == "multi-label":
        files = {name: write_tsv(tmp_path / f"{name}.tsv", _multilabel_rows(n, seed))
                 for name, n, seed in (("train", 48, 1), ("validation", 24, 2))}
        config = _config(tmp_path, tiny_bert_dir, files, label_separator=",")
        inputs = ["great happy film", "awful scary film", "the film", "lovely dismal afraid"]
    else:
        header = ("sentence", "sentence2", "label")
        files = {name: write_tsv(tmp_path / f"{name}.tsv", _pair_rows(n, seed), header=header)
                 for name, n, seed in (("train", 48, 1), ("validation", 24, 2))}
        config = _config(tmp_path, tiny_bert_dir, files, text_pair_column="sentence2", problem_type="regression",
                         score_range=[0, 5])
        inputs = [("great film", "lovely story"), ("awful plot", "awful plot"), ("happy end", "dismal acting")]
    config["training"]["num_train_epochs"] = 1
    run = run_recipe(TextClassificationRecipe(config)).run_dir
    got = OnnxClassifier(export_onnx(run, tmp_path / "onnx")).predict(inputs)
    # computed here from the run's files and the PyTorch model's logits, not through hftl's decisions code
    saved = json.loads((run / "calibration.json").read_text())
    loaded = load(run)
    columns = [list(c) for c in zip(*inputs)] if isinstance(inputs[0], tuple) else [inputs]
    with torch.no_grad():
        logits = loaded.model(**loaded.processor(*columns, padding=True, return_tensors="pt")).logits.double()
    if kind == "multi-label":
        names = [json.loads((run / "labels.json").read_text())["id2label"][str(i)] for i in range(3)]
        probabilities = torch.sigmoid(logits / saved["temperature"])
        assert saved["thresholds"] != [0.5] * 3  # tuned: a softmax or 0.5 would answer otherwise somewhere
        for row, p in zip(got, probabilities.tolist()):
            assert row["labels"] == [n for n, q, t in zip(names, p, saved["thresholds"]) if q >= t]
            assert [row["probabilities"][n] for n in names] == pytest.approx(p, abs=1e-4)
    else:
        low, high = saved["score_range"]
        expected = (low + (high - low) * torch.sigmoid(logits.view(-1))).tolist()
        assert [row["score"] for row in got] == pytest.approx(expected, abs=1e-4)
        assert all(set(row) == {"score"} and 0 <= row["score"] <= 5 for row in got)
