"""Knowledge distillation (hftl.distillation, hftl.student, `hftl distill`): the loss against a hand computation,
a student cut from its teacher that plain transformers loads, and distilled runs that are normal runs (text and
token classification). The distilled rows of tests/test_conformance.py run a student through single process,
gradient accumulation, DDP, FSDP and kill-resume."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from hftl.cli import main as hftl_main
from hftl.decisions import MULTI, REGRESSION, SINGLE
from hftl.distillation import DistillationLoss, DistillationTargets, HardLabelLoss, TeacherLogits
from tiny_runs import TEXTS, train_tiny_run

pytestmark = pytest.mark.usefixtures("one_thread")


# -- the loss, by hand ------------------------------------------------------------------------------------
def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


@pytest.fixture(scope="module")
def tiny_logits(tiny_bert_dir):
    """Student and teacher logits of two tiny BERT classifiers (3 labels) on the same 4 texts."""
    from transformers import AutoTokenizer, BertForSequenceClassification, BertForTokenClassification

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    logits = {}
    for kind, cls in (("text", BertForSequenceClassification), ("token", BertForTokenClassification)):
        for seed, role in ((0, "student"), (1, "teacher")):
            torch.manual_seed(seed)
            model = cls.from_pretrained(tiny_bert_dir, num_labels=3).eval()
            with torch.no_grad():
                for p in model.classifier.parameters():
                    p.normal_(0, 2.0)  # logits large enough that temperature matters
                logits[kind, role] = model(**batch).logits
    return logits, batch


@pytest.mark.parametrize("alpha,temperature", [(0.5, 2.0), (0.8, 4.0), (1.0, 1.0)])
def test_single_label_loss_by_hand(tiny_logits, alpha, temperature):
    logits, _ = tiny_logits
    student, teacher = logits["text", "student"], logits["text", "teacher"]
    labels = torch.tensor([0, 2, 1, 2])
    loss = DistillationLoss(HardLabelLoss(SINGLE), SINGLE, alpha, temperature)(
        {"logits": student}, DistillationTargets(labels, teacher))
    s, t, T = student.double().numpy(), teacher.double().numpy(), temperature
    p_t, p_s = _softmax(t / T), _softmax(s / T)
    kl = (p_t * (np.log(p_t) - np.log(p_s))).sum(-1).mean() * T * T
    ce = -np.log(_softmax(s)[np.arange(4), labels.numpy()]).mean()
    assert float(loss) == pytest.approx(alpha * kl + (1 - alpha) * ce, rel=1e-5)


def test_evaluation_sees_the_hard_loss_only(tiny_logits):
    logits, _ = tiny_logits
    labels = torch.tensor([0, 2, 1, 2])
    loss = DistillationLoss(HardLabelLoss(SINGLE), SINGLE, 0.5, 2.0)({"logits": logits["text", "student"]}, labels)
    expected = torch.nn.functional.cross_entropy(logits["text", "student"], labels)
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)


def test_multi_label_and_regression_losses_by_hand(tiny_logits):
    logits, _ = tiny_logits
    s, t = logits["text", "student"], logits["text", "teacher"]
    indicators = torch.tensor([[1, 0, 1], [0, 0, 1], [1, 1, 0], [0, 0, 0]], dtype=torch.float32)
    T, alpha = 3.0, 0.7
    loss = DistillationLoss(HardLabelLoss(MULTI), MULTI, alpha, T)({"logits": s}, DistillationTargets(indicators, t))
    sn, tn, y = s.double().numpy(), t.double().numpy(), indicators.numpy()
    q_t, q_s = _sigmoid(tn / T), _sigmoid(sn / T)
    kl = (q_t * np.log(q_t / q_s) + (1 - q_t) * np.log((1 - q_t) / (1 - q_s))).sum() / y.size * T * T
    p = _sigmoid(sn)
    bce = -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()
    assert float(loss) == pytest.approx(alpha * kl + (1 - alpha) * bce, rel=1e-5)

    scores, targets = s[:, :1], torch.tensor([0.5, 1.0, 2.0, -1.0])
    loss = DistillationLoss(HardLabelLoss(REGRESSION), REGRESSION, alpha, T)(
        {"logits": scores}, DistillationTargets(targets, t[:, :1]))
    expected = alpha * ((sn[:, 0] - tn[:, 0]) ** 2).mean() + (1 - alpha) * ((sn[:, 0] - targets.numpy()) ** 2).mean()
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_token_loss_masks_padding_and_ignored_positions(tiny_logits):
    logits, batch = tiny_logits
    s, t = logits["token", "student"], logits["token", "teacher"]
    labels = torch.randint(0, 3, s.shape[:2], generator=torch.Generator().manual_seed(0))
    labels[batch["attention_mask"] == 0] = -100  # padding
    labels[:, 0] = -100  # [CLS]
    labels[1, 2] = -100  # a later sub-word
    T, alpha = 2.0, 0.6
    loss = DistillationLoss(HardLabelLoss(SINGLE), SINGLE, alpha, T)({"logits": s}, DistillationTargets(labels, t))
    keep = (labels != -100).numpy()
    sn, tn = s.double().numpy()[keep], t.double().numpy()[keep]
    p_t, p_s = _softmax(tn / T), _softmax(sn / T)
    kl = (p_t * (np.log(p_t) - np.log(p_s))).sum(-1).mean() * T * T
    ce = -np.log(_softmax(sn)[np.arange(len(sn)), labels.numpy()[keep]]).mean()
    assert float(loss) == pytest.approx(alpha * kl + (1 - alpha) * ce, rel=1e-5)
    scrambled = t.clone()
    scrambled[labels == -100] = 1e3  # what the teacher says at masked positions cannot matter
    again = DistillationLoss(HardLabelLoss(SINGLE), SINGLE, alpha, T)({"logits": s}, DistillationTargets(labels, scrambled))
    assert float(again) == pytest.approx(float(loss), rel=1e-6)


def test_teacher_logits_are_computed_once_per_example(tiny_bert_dir):
    from transformers import AutoTokenizer, BertForTokenClassification

    torch.manual_seed(0)
    teacher = BertForTokenClassification.from_pretrained(tiny_bert_dir, num_labels=3)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    cache = TeacherLogits(teacher)
    first = tokenizer(TEXTS[:3], padding=True, return_tensors="pt")
    got = cache(dict(first))
    with torch.no_grad():
        expected = teacher(**first).logits
    mask = first["attention_mask"].bool()
    torch.testing.assert_close(got[mask], expected[mask], atol=1e-5, rtol=1e-5)
    assert cache.computed == 3
    again = tokenizer([TEXTS[1], TEXTS[3], TEXTS[1]], padding=True, return_tensors="pt")  # other padding, one new
    got = cache(dict(again))
    assert cache.computed == 4
    with torch.no_grad():
        expected = teacher(**again).logits
    mask = again["attention_mask"].bool()
    torch.testing.assert_close(got[mask], expected[mask], atol=1e-5, rtol=1e-5)
    assert (got[~mask] == 0).all()


# -- a student cut from its teacher ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def four_layer_bert(tiny_bert_dir, tmp_path_factory) -> Path:
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    out = tmp_path_factory.mktemp("bert4")
    config = BertConfig.from_pretrained(tiny_bert_dir)
    config.num_hidden_layers = 4
    torch.manual_seed(0)
    BertForMaskedLM(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def teacher(four_layer_bert, tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("teacher"), four_layer_bert)


def test_student_cut_from_a_teacher_loads_in_plain_transformers(teacher, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    from hftl.student import write_cut_student

    out = write_cut_student(teacher.run_dir, 2, tmp_path / "student")
    student, info = AutoModelForSequenceClassification.from_pretrained(out, output_loading_info=True)
    assert student.config.num_hidden_layers == 2 and len(student.bert.encoder.layer) == 2
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    weights = load_file(str(Path(teacher.run_dir) / "model.safetensors"))
    kept = json.loads((out / "student.json").read_text())["kept_layers"]
    assert kept == [0, 2]  # every other layer
    for position, layer in enumerate(kept):
        torch.testing.assert_close(student.bert.encoder.layer[position].output.dense.weight,
                                   weights[f"bert.encoder.layer.{layer}.output.dense.weight"])
    torch.testing.assert_close(student.classifier.weight, weights["classifier.weight"])
    assert student.config.id2label == {0: "neg", 1: "pos"}
    assert write_cut_student(teacher.run_dir, 2, out) == out  # the same cut again is reused


def test_distill_layers_gives_a_normal_run(teacher, tmp_path, capsys):
    import hftl
    from hftl.preflight import load_config
    from hftl.runner import run_recipe
    from hftl.tasks import get_recipe_class

    out = tmp_path / "student"
    assert hftl_main(["distill", str(teacher.run_dir), "--layers", "2", "--output-dir", str(out),
                      "--temperature", "3", "--write-config", str(tmp_path / "student.yaml")]) == 0
    config = load_config(tmp_path / "student.yaml")
    assert config.distillation.teacher == str(Path(teacher.run_dir).resolve()) and config.distillation.temperature == 3
    assert config.data.train == teacher.config.data.train and config.model.name_or_path == str(tmp_path / "student-init")
    result = run_recipe(get_recipe_class(config.task)(config))
    trainer = result.trainer
    assert type(trainer).__name__.startswith("Distillation")
    train_rows = 96
    assert trainer.teacher_logits.computed <= train_rows < 2 * trainer.teacher_logits.computed  # once, 2 epochs
    assert {"accuracy", "f1"} <= set(result.metrics["test"])
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["distillation"]["teacher"] == os.path.relpath(teacher.run_dir, out)  # portable: relative
    card = (out / "README.md").read_text()
    assert "Knowledge distillation:** trained to match the teacher run `run`" in card
    assert "temperature 3 (× 3²)" in card and "layers 0, 2 of 4" in card
    assert len(hftl.load(out).predict(TEXTS)) == len(TEXTS)
    assert hftl.load(out).model.config.num_hidden_layers == 2


def test_bad_distillation_settings_are_reported_up_front(teacher, tiny_bert_dir, tiny_gpt2_dir, text_config, tmp_path):
    from hftl.errors import ConfigError
    from hftl.preflight import load_config
    from hftl.runner import run_recipe
    from hftl.tasks import get_recipe_class

    with pytest.raises(ConfigError) as err:
        load_config(text_config(**{"distillation.teacher": str(tmp_path), "distillation.alpha": 1.5}))
    text = str(err.value)
    assert "alpha: must be between 0 and 1, got 1.5" in text
    with pytest.raises(ConfigError, match="is not a finished hftl run"):
        load_config(text_config(**{"distillation.teacher": str(tmp_path / "none")}))
    # a student whose tokenizer is not the teacher's: named before training starts
    config = load_config(text_config(model_dir=tiny_gpt2_dir, **{"distillation.teacher": str(teacher.run_dir)}))
    with pytest.raises(ConfigError, match="tokenizer .* is not the teacher's"):
        run_recipe(get_recipe_class(config.task)(config))


# -- token classification ----------------------------------------------------------------------------------------
def test_token_classification_distillation(tiny_bert_dir, tmp_path):
    from hftl.preflight import load_config
    from hftl.runner import run_recipe
    from hftl.tasks import get_recipe_class
    from test_token_classification import make_sentences as ner_sentences, write_conll

    data = {name: str(write_conll(tmp_path / f"{name}.txt", ner_sentences(n, seed=seed)))
            for name, n, seed in (("train", 32, 1), ("validation", 11, 2), ("test", 13, 3))}
    base = {"task": "token-classification", "model": {"name_or_path": str(tiny_bert_dir), "strategy": "full"},
            "data": {**data, "max_length": 32, "stride": 8},
            "training": {"output_dir": str(tmp_path / "teacher"), "num_train_epochs": 2, "learning_rate": 5e-3,
                         "per_device_train_batch_size": 16, "seed": 42},
            "speed": {"bf16": False}}
    teacher = run_recipe(get_recipe_class("token-classification")(load_config(base)))
    student = load_config({**base, "training": {**base["training"], "output_dir": str(tmp_path / "student")},
                           "distillation": {"teacher": str(teacher.run_dir), "alpha": 0.7}})
    result = run_recipe(get_recipe_class(student.task)(student))
    computed = result.trainer.teacher_logits.computed
    assert 0 < computed <= len(result.trainer.train_dataset) < 2 * computed  # once per window, 2 epochs
    assert {"f1", "precision", "recall"} <= set(result.metrics["test"])
    assert "Knowledge distillation" in (tmp_path / "student" / "README.md").read_text()
