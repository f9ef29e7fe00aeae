"""The conformance matrix: every registered task x strategy x launch mode, on tiny models built here.

Rows are the tasks of `hftl.tasks.registered_tasks()` (text classification twice: an encoder and a decoder),
each with the strategies full / freeze / lora, and distilled students of text and token classification (a
`distillation` section whose teacher is another row's run; `full` only). A task registered later joins by
itself; it runs once it has an entry in `TINY` below (how to build a tiny config for it), and is skipped, saying
so, until then.

Columns, and what each asserts:

* single process: 8 steps, save, `hftl.load` predicts exactly what the in-memory model predicts; a LoRA run's
  `hftl.export.export_merged` folder, loaded by plain transformers, predicts the same (tolerance 1e-4).
* rows whose task evaluates the untrained model first (`data.baseline`): at the default precision, a run with that
  evaluation trains exactly as one without it (per-step losses, weights).
* distilled rows, besides every column: the teacher-logit cache holds what the teacher computes on each training
  example alone, computed once.
* gradient accumulation: per-device batch 4 x 2 accumulation steps gives the per-step losses (rel. 1e-4) and
  final weights (abs. 1e-5 + rel. 1e-4) of batch 8. Dropout is off (masks are drawn per forward pass, so two
  micro-batches cannot draw the masks of one batch) and masked-LM blocks are masked at fixed positions (BERT's
  MLM loss is a mean over the masked tokens of one forward pass; with as many masked tokens in every block,
  the mean of the micro-batch means is the batch mean).
* 2-process DDP (`recipes/accelerate/cpu_ddp.yaml`, one launch running every job, each with its task's default
  `data.baseline`: an evaluation before training where the task has one): every strategy without
  dropout gives the same per-step losses, weights and metrics as one process at the same global batch; each
  row's `dropout_strategy` with dropout on and hftl's default `speed.cheap_dropout: auto`, the same within the
  spread dropout itself causes. Evaluation counts every example once; only rank 0 writes the run folder.
* 2-process FSDP on CPU (`recipes/accelerate/cpu_fsdp.yaml`, one launch): every strategy of every row FSDP can
  run (`FSDP_REFUSED`: what refuses the others), FULL_STATE_DICT, the same losses, weights and metrics as one
  process; on `FSDP_ROW` also checkpoints in both state-dict types, resumed.
* kill and resume: every strategy, SIGKILL mid-epoch, `hftl train --resume` ends with the weights and per-step
  losses of an uninterrupted run.

Budget: the whole module is meant to run in about 6 minutes on 2 CPU cores.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from conftest import make_sentences, write_tsv
from faults import signal_at_step
from hftl.cli import main as hftl_main
from hftl.run_dir import RunDir
from hftl.runner import run_recipe
from hftl.tasks import registered_tasks
from test_image_classification import COLOURS, colour_image, tiny_vit_dir  # noqa: F401  (a fixture)
from test_token_classification import make_sentences as ner_sentences, write_conll

REPO = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "conformance_worker.py"
STRATEGIES = ("full", "freeze", "lora")
STEPS, BATCH = 8, 8
SAVE_STEPS, KILL_AT = 3, 5  # checkpoint-3 is mid-epoch 1, the kill at step 5 mid-epoch 2 (4 steps an epoch)
TEXTS = ["the film was great", "it was really awful and boring", "a lovely and charming story"]
NER_INPUTS = ["alice went to new york", ["the", "film", "carol", "rome"]]
#: a distilled row's settings: half the loss from the teacher's logits, softened
DISTILLATION = {"alpha": 0.5, "temperature": 2.0}


# -- how to build a tiny run of each task ----------------------------------------------------------
@dataclass
class Row:
    """One row of the matrix: a task on one tiny model."""

    task: str
    model: str  # the fixture folder key in `Tiny.models`
    data: str  # the data key in `Tiny.data`
    #: raw inputs of `predict`, and its keyword arguments
    inputs: object = None
    predict_kwargs: dict = None
    #: the strategy of the DDP run with dropout on (every strategy runs without dropout)
    dropout_strategy: str = "full"
    #: absolute tolerance of the accumulated run's final weights
    weight_atol: float = 1e-5
    #: a distilled student (`distillation` section): the row of the same task whose single-process `full` run is
    #: the teacher
    teacher: str | None = None
    #: the strategies the row runs (every one by default)
    strategies: tuple = STRATEGIES

    def data_section(self, tiny: "Tiny") -> dict:
        return dict(tiny.data[self.data])


#: task -> {row name: Row}. Add an entry here for a new task.
TINY: dict[str, dict[str, Row]] = {
    "text-classification": {
        "text-classification/encoder": Row("text-classification", "bert", "text", TEXTS, {}, dropout_strategy="full"),
        "text-classification/decoder": Row("text-classification", "gpt2", "text", TEXTS, {}, dropout_strategy="lora"),
        # knowledge distillation (`hftl distill`): the student learns the encoder row's logits, cached per example.
        # `full` only, the strategy `hftl distill` writes: distillation changes the loss and the data every
        # strategy shares, and each strategy's own columns are the rows above
        "text-classification/distilled": Row("text-classification", "bert", "text", TEXTS, {}, dropout_strategy="full",
                                             teacher="text-classification/encoder", strategies=("full",)),
    },
    "image-classification": {
        "image-classification": Row("image-classification", "vit", "image", None, {}, dropout_strategy="freeze"),
    },
    "causal-lm": {
        "causal-lm": Row("causal-lm", "gpt2", "lm", ["the film was", "it felt"], {"max_new_tokens": 6},
                         dropout_strategy="lora"),
    },
    "token-classification": {
        "token-classification": Row("token-classification", "bert", "ner", NER_INPUTS, {}, dropout_strategy="lora"),
        # knowledge distillation: the teacher's token logits (cached per window), masked where labels are -100
        "token-classification/distilled": Row("token-classification", "bert", "ner", NER_INPUTS, {},
                                              dropout_strategy="full", teacher="token-classification",
                                              strategies=("full",)),
    },
    "masked-lm": {
        "masked-lm": Row("masked-lm", "bert", "mlm", ["the film was [MASK]", "it felt really [MASK] and boring"],
                         {"top_k": 3}, dropout_strategy="full"),
    },
    "instruction-tuning": {
        "instruction-tuning": Row("instruction-tuning", "gpt2", "chat", ["the film was great", "it felt boring"],
                                  {"max_new_tokens": 4}, dropout_strategy="lora"),
    },
    "preference-tuning": {
        # DPO's loss is a log-sigmoid of summed log-ratios: splitting the batch (accumulation, or DDP's all-reduce
        # of two half batches) changes the summation order, and Adam turns that rounding, in the near-zero
        # gradients of positions only the longest pairs reach, into updates of ~2e-5. Measured: GPT-2's wpe row 38
        # alone, reached by the 2 longest of 64 sequences, where chosen and rejected share every token but the
        # label, so their gradients cancel (the per-step losses still agree within 1e-4)
        "preference-tuning": Row("preference-tuning", "gpt2", "pairs", ["the film was great", "it felt boring"],
                                 {"max_new_tokens": 4}, dropout_strategy="lora", weight_atol=1e-4),
    },
}

#: a chat template for the tiny GPT-2 (which has none): each turn ends with EOS, the end of turn that trains
TINY_CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] + eos_token + '\n' }}{% endfor %}"
                      "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}")

#: the transformer block of each tiny model, which FSDP shards as a unit (`fsdp_transformer_layer_cls_to_wrap`)
LAYER_CLASS = {"bert": "BertLayer", "gpt2": "GPT2Block", "vit": "ViTLayer"}


def matrix_rows() -> list:
    rows = []
    for task in registered_tasks():
        if task not in TINY:
            rows.append(pytest.param(task, None, id=task, marks=pytest.mark.skip(
                reason=f"task '{task}' has no tiny config in tests/test_conformance.py TINY: add one to put it in the matrix")))
        for name in TINY.get(task, {}):
            rows.append(pytest.param(task, name, id=name))
    return rows


ROWS = matrix_rows()


def matrix_cells() -> list:
    """(task, row, strategy) of every row and each of its strategies; a skipped row once, without strategy."""
    cells = []
    for param in ROWS:
        task, name = param.values
        if param.marks:
            cells.append(pytest.param(task, name, None, id=param.id, marks=param.marks))
            continue
        cells += [pytest.param(task, name, strategy, id=f"{name}-{strategy}")
                  for strategy in TINY[task][name].strategies]
    return cells


CELLS = matrix_cells()


class Tiny:
    """Tiny models (with and without dropout) and small data, shared by the module's tests."""

    def __init__(self, root: Path, bert: Path, gpt2: Path, vit: Path):
        self.root = root
        self.models = {"bert": bert, "gpt2": gpt2, "vit": vit}
        self.no_dropout = {name: _without_dropout(path, root / f"{name}-no-dropout") for name, path in self.models.items()}
        text = {name: write_tsv(root / f"{name}.tsv", make_sentences(n, seed=seed))
                for name, n, seed in (("train", 32, 1), ("dev", 11, 2), ("test", 13, 3))}
        # training blocks a multiple of the global batch 8 (a short last batch would be padded with repeats under
        # DDP): 54 documents give 48 GPT-2 blocks of 16 tokens, 65 give 32 BERT blocks
        lm = {name: _text_file(root / f"lm-{name}.txt", n, seed) for name, n, seed in (("train", 54, 11), ("mlm", 65, 11),
                                                                                       ("dev", 12, 12), ("test", 12, 13))}
        images = {name: _image_folder(root / f"images-{name}", n, seed) for name, n, seed in (("train", 32, 1),
                                                                                                ("dev", 9, 2), ("test", 9, 3))}
        self.image_inputs = [str(p) for p in sorted((root / "images-test").rglob("*.png"))[:3]]
        ner = {name: write_conll(root / f"ner-{name}.txt", ner_sentences(n, seed=seed))
               for name, n, seed in (("train", 32, 1), ("dev", 11, 2), ("test", 13, 3))}
        lm_data = {"train": str(lm["train"]), "validation": str(lm["dev"]), "test": str(lm["test"]), "block_size": 16,
                   "baseline": False}
        chat_template = root / "chat_template.jinja"
        chat_template.write_text(TINY_CHAT_TEMPLATE)
        chats = {name: _chat_file(root / f"chat-{name}.jsonl", n, seed, pairs=False)
                 for name, n, seed in (("train", 32, 1), ("dev", 6, 2), ("test", 6, 3))}
        pairs = {name: _chat_file(root / f"pairs-{name}.jsonl", n, seed, pairs=True)
                 for name, n, seed in (("train", 32, 1), ("dev", 6, 2), ("test", 6, 3))}
        self.data = {
            "chat": {"train": str(chats["train"]), "validation": str(chats["dev"]), "test": str(chats["test"]),
                     "chat_template": str(chat_template), "max_length": 64, "baseline": False,
                     "generation_max_new_tokens": 4},
            "pairs": {"train": str(pairs["train"]), "validation": str(pairs["dev"]), "test": str(pairs["test"]),
                      "chat_template": str(chat_template), "max_length": 64, "baseline": False},
            "text": {"train": str(text["train"]), "validation": str(text["dev"]), "test": str(text["test"]),
                     "text_column": "sentence", "label_column": "label", "max_length": 32},
            "image": {"train": str(images["train"]), "validation": str(images["dev"]), "test": str(images["test"]),
                      "augment": True},
            "lm": lm_data,
            "mlm": {**lm_data, "train": str(lm["mlm"])},
            "ner": {"train": str(ner["train"]), "validation": str(ner["dev"]), "test": str(ner["test"]),
                    "max_length": 32, "stride": 8},
        }

    def config(self, row: Row, strategy: str, name: str, dropout: bool = False, **training) -> dict:
        models = self.models if dropout else self.no_dropout
        distillation = {}
        if row.teacher:  # trained here, before any launch that reads it
            distillation = {"distillation": {"teacher": str(single_run(self, row.task, row.teacher, "full").run_dir),
                                             **DISTILLATION}}
        return {**distillation,
            "task": row.task,
            "model": {"name_or_path": str(models[row.model]), "strategy": strategy,
                      "lora": {"r": 4, "alpha": 8, "dropout": 0.0}},
            "data": row.data_section(self),
            "training": {"output_dir": str(self.root / "runs" / name), "max_steps": STEPS, "learning_rate": 5e-3,
                         "per_device_train_batch_size": BATCH, "per_device_eval_batch_size": 4, "seed": 13,
                         "logging_steps": 1, "eval_strategy": "no", "save_strategy": "no", **training},
            "speed": {"bf16": False, "group_by_length": False},  # length groups depend on the batch size
        }

    def write(self, config: dict, name: str) -> Path:
        path = self.root / "configs" / f"{name}.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(yaml.safe_dump(config))
        return path


def _without_dropout(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text())
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout", "resid_pdrop",
                "embd_pdrop", "attn_pdrop", "summary_first_dropout"):
        if key in config or key.endswith("pdrop"):
            config[key] = 0.0
    (target / "config.json").write_text(json.dumps(config))
    return target


def _chat_file(path: Path, n: int, seed: int, pairs: bool) -> Path:
    """Chat rows (the user's sentence, the assistant's label), or preference pairs (the label chosen)."""
    rows = []
    for sentence, label in make_sentences(n, seed=seed):
        user = [{"role": "user", "content": sentence}]
        reply, other = [{"role": "assistant", "content": label}], [{"role": "assistant", "content": "pos" if label == "neg" else "neg"}]
        rows.append({"prompt": user, "chosen": reply, "rejected": other} if pairs else {"messages": user + reply})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _text_file(path: Path, n: int, seed: int) -> Path:
    path.write_text("\n".join(s for s, _ in make_sentences(n, seed=seed)) + "\n", encoding="utf-8")
    return path


def _image_folder(root: Path, n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    names = list(COLOURS)
    for i in range(n):
        label = names[i % len(names)]
        (root / label).mkdir(parents=True, exist_ok=True)
        colour_image(COLOURS[label], rng).save(root / label / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_bert_dir, tiny_gpt2_dir, tiny_vit_dir):  # noqa: F811
    return Tiny(tmp_path_factory.mktemp("matrix"), tiny_bert_dir, tiny_gpt2_dir, tiny_vit_dir)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from threads; on a shared CPU, spinning OpenMP workers cost several times the work."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _recipe_class(task: str):
    return registered_tasks()[task]


def _row(task: str, name: str) -> Row:
    return TINY[task][name]


def _train(recipe_class, config: dict):
    return run_recipe(recipe_class(config))


_SINGLE: dict = {}


def single_run(tiny: Tiny, task: str, name: str, strategy: str):
    """The single-process run of a row and strategy at batch 8 without dropout (trained once per module)."""
    key = (name, strategy)
    if key not in _SINGLE:
        run_name = f"{name.replace('/', '-')}-{strategy}"
        _SINGLE[key] = _train(_recipe_class(task), tiny.config(_row(task, name), strategy, run_name))
    return _SINGLE[key]


def _inputs(tiny: Tiny, row: Row) -> list:
    return tiny.image_inputs if row.inputs is None else list(row.inputs)


def _history(run_dir: Path) -> list[dict]:
    return [h for h in json.loads((Path(run_dir) / "trainer_state.json").read_text())["log_history"] if "loss" in h]


def _weights(run_dir: Path) -> dict:
    """The trained weights a run folder holds (the model, or the LoRA adapter and its saved modules)."""
    files = [f for f in ("model.safetensors", "adapter_model.safetensors") if (Path(run_dir) / f).is_file()]
    assert files, f"no weights in {run_dir}"
    return load_file(Path(run_dir) / files[0])


#: attention key biases: softmax ignores a shift shared by all keys, so their gradient is zero up to rounding, and
#: Adam turns rounding noise into updates of up to ~1e-5 a step; they are compared within 1e-3
ZERO_GRADIENT = re.compile(r"(\.key\.bias|\.k_proj\.bias|\.c_attn\.bias)$")


def assert_same_weights(got: Path, want: Path, atol=1e-5, rtol=1e-4):
    a, b = _weights(got), _weights(want)
    assert a.keys() == b.keys()
    for key in a:
        tolerance = 1e-3 if ZERO_GRADIENT.search(key) else atol
        torch.testing.assert_close(a[key], b[key], atol=tolerance, rtol=rtol,
                                   msg=lambda message, key=key: f"{key}: {message}")


def assert_same_predictions(got, want, rel=1e-4, where="prediction"):
    """Equal labels and texts, floats within `rel` (and 1e-6 absolute)."""
    if isinstance(want, dict):
        assert got.keys() == want.keys(), where
        for key in want:
            assert_same_predictions(got[key], want[key], rel, f"{where}.{key}")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same_predictions(g, w, rel, f"{where}[{i}]")
    elif isinstance(want, float):
        assert got == pytest.approx(want, rel=rel, abs=1e-6), where
    else:
        assert got == want, where


# -- column 1: single process ------------------------------------------------------------------------
@pytest.mark.parametrize("task, name, strategy", CELLS)
def test_single_process_saves_reloads_and_predicts_the_same(tiny, task, name, strategy, tmp_path):
    import transformers

    from hftl import load
    from hftl.export import export_merged

    row = _row(task, name)
    result = single_run(tiny, task, name, strategy)
    run_dir = result.run_dir
    assert json.loads((run_dir / "trainer_state.json").read_text())["global_step"] == STEPS
    inputs = _inputs(tiny, row)
    loaded = load(run_dir)
    model = result.trainer.model.eval()
    # what the run fitted on validation (a classifier's decisions) is returned and saved, not kept on the recipe
    fitted = {} if loaded.decisions is None else {"decisions": loaded.decisions}
    in_memory = result.recipe.predict(model, result.trainer.processing_class, inputs, loaded.labels,
                                      **row.predict_kwargs, **fitted)
    reloaded = loaded.predict(inputs, **row.predict_kwargs)
    assert_same_predictions(reloaded, in_memory)
    if strategy == "lora":
        # the merged export is a plain transformers checkpoint: load it without hftl's loader
        out = export_merged(run_dir, tmp_path / "export", card=False)
        plain = getattr(transformers, loaded.recipe.auto_model_class).from_pretrained(out).eval()
        assert not any("lora" in key for key in plain.state_dict())
        processor = loaded.recipe.load_trained_processor(out)
        merged = loaded.recipe.predict(plain, processor, inputs, loaded.labels, **row.predict_kwargs, **fitted)
        assert_same_predictions(merged, reloaded)


# -- column 1b: the default precision ------------------------------------------------------------------
#: bf16 autocast against float32 over STEPS steps at lr 5e-3: the per-step losses agree within this (relative)
BF16_LOSS_REL = 0.05


@pytest.mark.parametrize("task, name", [p for p in ROWS if not p.marks])
def test_default_precision_trains_records_and_reloads(tiny, task, name):
    """Every row as a user runs it, `speed.bf16` left at its default (`auto`: on where the CPU or GPU has native
    bf16, as on the machines hftl is developed on; float32 elsewhere): the manifest records the precision used, the
    per-step losses follow the float32 run of the same row within BF16_LOSS_REL, the saved run predicts what the
    trained model in memory predicts, and the run's test figures, computed in float32 after bf16 training, are what
    `hftl evaluate` computes on the saved run."""
    from hftl import load
    from hftl.trainer import bf16_is_fast

    row = _row(task, name)
    strategy = row.dropout_strategy if row.dropout_strategy in row.strategies else row.strategies[0]
    config = tiny.config(row, strategy, f"{name.replace('/', '-')}-{strategy}-default-precision")
    del config["speed"]["bf16"]
    result = _train(_recipe_class(task), config)
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["training"]["bf16"] is bf16_is_fast() and manifest["training"]["inference_precision"] == "float32"
    float32 = single_run(tiny, task, name, strategy)
    got, want = _history(result.run_dir), _history(float32.run_dir)
    assert [h["step"] for h in got] == [h["step"] for h in want]
    for g, w in zip(got, want):
        assert g["loss"] == pytest.approx(w["loss"], rel=BF16_LOSS_REL), f"step {w['step']}"
    inputs = _inputs(tiny, row)
    loaded = load(result.run_dir)
    fitted = {} if loaded.decisions is None else {"decisions": loaded.decisions}
    # accelerate wraps the trained model's forward in autocast; the weights are float32 either way
    model = result.trainer.accelerator.unwrap_model(result.trainer.model, keep_fp32_wrapper=False).eval()
    in_memory = result.recipe.predict(model, result.trainer.processing_class, inputs, loaded.labels,
                                      **row.predict_kwargs, **fitted)
    assert_same_predictions(loaded.predict(inputs, **row.predict_kwargs), in_memory)
    assert_recorded_test_figures_are_evaluates(result.run_dir, loaded)


def assert_recorded_test_figures_are_evaluates(run_dir: Path, loaded) -> None:
    """The test figures a run recorded are those `hftl evaluate` computes on the saved run (`loaded`)."""
    recorded = _figures(_metrics(run_dir)["test"])
    evaluated = _figures(loaded.evaluate())
    shared = recorded.keys() & evaluated.keys()  # a preference run's reward figures need the reference it trained against
    assert shared >= {key for key in evaluated if "loss" in key or "accuracy" in key} and shared
    for key in shared:
        assert recorded[key] == pytest.approx(evaluated[key], rel=1e-5, abs=1e-7), key


def _figures(metrics: dict) -> dict:
    """The numeric figures of a split's metrics, less its timings."""
    return {key: value for key, value in metrics.items() if isinstance(value, (int, float))
            and not isinstance(value, bool) and not any(word in key for word in ("runtime", "per_second"))}


def _rows_with_a_baseline() -> list:
    """The rows whose task evaluates the untrained model first (a `data.baseline` setting)."""
    import dataclasses

    return [p for p in ROWS if not p.marks and "baseline" in
            {f.name for f in dataclasses.fields(_recipe_class(p.values[0]).data_config_class)}]


@pytest.mark.parametrize("task, name", _rows_with_a_baseline())
def test_the_evaluation_before_training_leaves_training_as_it_was(tiny, task, name):
    """`data.baseline: true` (the default) evaluates the untrained model first. At the default precision, the run
    then trains exactly as one without it: the same per-step losses and weights. (The Trainer's first evaluation
    prepares the model for evaluation only: training must not inherit that, nor the random draws it made.)"""
    row = _row(task, name)
    strategy = row.dropout_strategy if row.dropout_strategy in row.strategies else row.strategies[0]
    runs = {}
    for baseline in (True, False):
        config = tiny.config(row, strategy, f"{name.replace('/', '-')}-{strategy}-baseline-{baseline}", dropout=True)
        del config["speed"]["bf16"]
        config["data"]["baseline"] = baseline
        runs[baseline] = _train(_recipe_class(task), config).run_dir
    assert "before_training" in _metrics(runs[True]) and "before_training" not in _metrics(runs[False])
    assert [h["loss"] for h in _history(runs[True])] == [h["loss"] for h in _history(runs[False])]
    assert_same_weights(runs[True], runs[False], atol=0.0, rtol=0.0)


def _distilled_rows() -> list:
    return [p for p in ROWS if not p.marks and _row(*p.values).teacher]


@pytest.mark.parametrize("task, name", _distilled_rows())
def test_distilled_student_learned_from_the_teachers_own_logits(tiny, task, name):
    """The teacher-logit cache of a distilled run holds, for every training example, the logits that the teacher
    run's model, loaded by plain transformers, computes on that example alone (no padding, no batch neighbours),
    each computed once over the run's 2 epochs."""
    import transformers

    from hftl.distillation import TEACHER_INPUTS

    row = _row(task, name)
    trainer = single_run(tiny, task, name, "full").trainer
    cache, train = trainer.teacher_logits, trainer.train_dataset
    teacher_dir = single_run(tiny, task, row.teacher, "full").run_dir
    teacher = getattr(transformers, _recipe_class(task).auto_model_class).from_pretrained(teacher_dir).eval()
    examples = [{k: torch.tensor([train[i][k]]) for k in TEACHER_INPUTS if k in train.column_names}
                for i in range(len(train))]
    distinct = {tuple(tuple(v[0].tolist()) for v in e.values()) for e in examples}
    assert STEPS * BATCH >= len(train)  # every example seen in the first epoch, again in the second
    assert cache.computed == len(distinct) > 0
    for example in examples:
        with torch.no_grad():
            want = teacher(**example).logits
        got = cache(example)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert cache.computed == len(distinct)  # every lookup a cache hit


# -- column 2: gradient accumulation --------------------------------------------------------------------
def _fixed_mask_recipe(recipe_class):
    """The masked-LM recipe with training blocks masked at fixed positions (every 4th token), so that every
    micro-batch holds as many masked tokens as its share of the batch."""

    class FixedMasks(recipe_class):
        def finish_blocks(self, packed, tokenizer, name):
            if name != "train":
                return super().finish_blocks(packed, tokenizer, name)

            def mask(batch):
                ids = batch["input_ids"]
                return {"labels": [[t if i % 4 == 1 else -100 for i, t in enumerate(row)] for row in ids],
                        "input_ids": [[tokenizer.mask_token_id if i % 4 == 1 else t for i, t in enumerate(row)]
                                      for row in ids]}

            return packed.map(mask, batched=True, remove_columns=packed.column_names)

    return FixedMasks


@pytest.mark.parametrize("task, name, strategy", CELLS)
def test_gradient_accumulation_matches_the_full_batch(tiny, task, name, strategy):
    row = _row(task, name)
    recipe_class = _recipe_class(task)
    slug = f"{name.replace('/', '-')}-{strategy}"
    if task == "masked-lm":
        recipe_class = _fixed_mask_recipe(recipe_class)
        whole = _train(recipe_class, tiny.config(row, strategy, f"{slug}-fixed-masks")).run_dir
    else:
        whole = single_run(tiny, task, name, strategy).run_dir
    halves = _train(recipe_class, tiny.config(row, strategy, f"{slug}-accumulated", per_device_train_batch_size=BATCH // 2,
                                              gradient_accumulation_steps=2)).run_dir
    got, want = _history(halves), _history(whole)
    assert [h["step"] for h in got] == [h["step"] for h in want] == list(range(1, STEPS + 1))
    for g, w in zip(got, want):
        assert g["loss"] == pytest.approx(w["loss"], rel=1e-4), (g, w)
    assert_same_weights(halves, whole, atol=row.weight_atol)


# -- column 3: kill and resume ---------------------------------------------------------------------------
def _train_and_sigkill(recipe_class, config: dict, step: int) -> int:
    """Train `config` in a forked child that SIGKILLs itself at the end of step `step`; returns its wait status."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            signal_at_step(signal.SIGKILL, step)
            run_recipe(recipe_class(config))
        finally:
            os._exit(3)  # not killed: the test fails on the status
    _, status = os.waitpid(pid, 0)
    return status


@pytest.mark.parametrize("task, name, strategy", CELLS)
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(tiny, task, name, strategy):
    row = _row(task, name)
    reference = single_run(tiny, task, name, strategy).run_dir
    slug = f"{name.replace('/', '-')}-{strategy}-killed"
    config = tiny.config(row, strategy, slug, save_strategy="steps", save_steps=SAVE_STEPS, save_total_limit=5)
    status = _train_and_sigkill(_recipe_class(task), config, KILL_AT)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
    run_dir = Path(config["training"]["output_dir"])
    assert RunDir(run_dir).last_checkpoint(quiet=True).endswith(f"checkpoint-{SAVE_STEPS}")
    assert not (run_dir / "metrics.json").exists()
    assert hftl_main(["train", str(tiny.write(config, slug)), "--resume"]) == 0
    assert [h["step"] for h in _history(run_dir)] == list(range(1, STEPS + 1))
    assert_same_weights(run_dir, reference)
    for got, want in zip(_history(run_dir), _history(reference)):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-4), (got, want)


def _renamed_vit_checkpoint(tiny_vit_dir, folder: Path):
    """A ViT with perturbed weights saved to `folder` (under the original names); returns its state dict."""
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(tiny_vit_dir)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.5)
    model.save_pretrained(folder)
    saved = load_file(folder / "model.safetensors")
    assert any("attention.attention.query" in k for k in saved) and any("q_proj" in k for k in model.state_dict())
    return {k: v.clone() for k, v in model.state_dict().items()}


def _trainer(model, tmp_path):
    from transformers import TrainingArguments

    from hftl.speed.trainer import trainer_class

    return trainer_class()(model=model, args=TrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True,
                                                               report_to=[]))


def test_resume_restores_weights_saved_under_original_names(tiny_vit_dir, tmp_path):  # noqa: F811
    """transformers 5.24 saves ViT's q_proj/k_proj/v_proj as attention.attention.query/key/value; the resume load
    must convert them back (the stock Trainer loads them non-strictly and keeps the initial weights)."""
    from transformers import AutoModelForImageClassification

    want = _renamed_vit_checkpoint(tiny_vit_dir, tmp_path / "checkpoint-1")
    model = AutoModelForImageClassification.from_pretrained(tiny_vit_dir)
    model.vit.embeddings.patch_embeddings.projection.weight.requires_grad_(False)  # a frozen weight stays frozen
    params = dict(model.named_parameters())
    _trainer(model, tmp_path)._load_from_checkpoint(str(tmp_path / "checkpoint-1"))
    got = model.state_dict()
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], msg=key)
    assert all(p is params[n] for n, p in model.named_parameters())  # loaded in place: the optimizer's tensors
    assert not model.vit.embeddings.patch_embeddings.projection.weight.requires_grad


def test_resume_fails_loudly_when_a_weight_is_missing(tiny_vit_dir, tmp_path):  # noqa: F811
    from safetensors.torch import save_file
    from transformers import AutoModelForImageClassification

    folder = tmp_path / "checkpoint-1"
    _renamed_vit_checkpoint(tiny_vit_dir, folder)
    saved = load_file(folder / "model.safetensors")
    dropped = next(k for k in saved if "attention.attention.key.weight" in k)
    del saved[dropped]
    save_file(saved, folder / "model.safetensors", metadata={"format": "pt"})
    model = AutoModelForImageClassification.from_pretrained(tiny_vit_dir)
    with pytest.raises(RuntimeError, match="k_proj"):
        _trainer(model, tmp_path)._load_from_checkpoint(str(folder))


# -- distributed launches --------------------------------------------------------------------------------
def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(tiny: Tiny, accelerate_config: str, name: str, jobs: list[dict], *options, **env):
    """`accelerate launch --config_file recipes/accelerate/<accelerate_config>` of the worker over `jobs` (dicts with
    "name" and "config", a config dict); returns (stderr, {rank: {job name: result}})."""
    root = tiny.root / name
    root.mkdir()
    for job in jobs:
        job["config"] = str(tiny.write(job["config"], job["name"]))
    spec = root / "jobs.json"
    spec.write_text(json.dumps({"root": str(tiny.root), "jobs": jobs}))
    for rank in (0, 1):
        (tiny.root / f"result-{rank}.json").unlink(missing_ok=True)
    command = [str(Path(sys.executable).with_name("accelerate")), "launch", "--config_file",
               str(REPO / "recipes" / "accelerate" / accelerate_config), "--main_process_port", str(_free_port()),
               *options, str(WORKER), str(spec)]
    environment = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                   "HF_DATASETS_CACHE": str(tiny.root.parent / f"{name}-datasets-cache"), **env}
    proc = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=str(REPO), timeout=900)
    assert proc.returncode == 0, proc.stderr[-6000:]
    results = {rank: {r["name"]: r for r in json.loads((tiny.root / f"result-{rank}.json").read_text())}
               for rank in (0, 1)}
    for by_job in results.values():  # keep the writes below each job's own run folder
        for job_name, result in by_job.items():
            result["writes"] = [w for w in result["writes"] if f"runs/{job_name}" in w]
    for rank, by_job in results.items():
        for job in jobs:
            assert by_job[job["name"]]["status"] == 0, (rank, job["name"], proc.stderr[-6000:])
    return proc.stderr, results


def _metrics(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "metrics.json").read_text())


def assert_same_metrics(got: dict, want: dict, rel: float):
    """The same evaluation: equal counts (examples, tokens, pairs) and confusion matrices; the loss within `rel`,
    or, for a task that reports none (preference tuning), every score within `rel`."""
    for split in ("validation", "test"):
        g, w = got[split], want[split]
        counts = [k for k, v in w.items() if isinstance(v, int) and not isinstance(v, bool)]
        assert {k: g.get(k) for k in counts} == {k: w[k] for k in counts}, split
        if "confusion_matrix" in w:
            assert g["confusion_matrix"] == w["confusion_matrix"], split
            assert g["accuracy"] == pytest.approx(w["accuracy"]), split
        scores = ["loss"] if "loss" in w else [k for k, v in w.items() if isinstance(v, float)]
        assert scores, f"{split}: no loss and no score to compare"
        for key in scores:
            assert g[key] == pytest.approx(w[key], rel=rel, abs=1e-6), (split, key)


def _eval_rows(tiny: Tiny, row: Row, split: str) -> int | None:
    """How many examples a classification or conversation split holds (None for language models, which count
    blocks)."""
    source = Path(row.data_section(tiny)[{"validation": "validation", "test": "test"}[split]])
    if source.is_dir():
        return sum(1 for _ in source.rglob("*.png"))
    if source.suffix == ".tsv":
        return len(source.read_text().splitlines()) - 1
    if source.suffix == ".jsonl":
        return len(source.read_text().splitlines())
    return None


def _evaluated(metrics: dict) -> int:
    """How many examples an evaluation counted: a confusion matrix's total, or the conversations or pairs."""
    if "confusion_matrix" in metrics:
        return sum(map(sum, metrics["confusion_matrix"]))
    return metrics.get("examples", metrics.get("pairs"))


def _real_rows():
    return [p for p in ROWS if not p.marks]


def _selected_rows(request, launch_fixture: str, unparametrized: str | None = None) -> set:
    """The row names of the collected tests that use `launch_fixture` (`unparametrized` for a test of it that has
    no row parameter): a launch runs only the jobs some selected test reads, so `-k` picks rows without paying
    for the others' launches; a whole run selects every row."""
    selected = set()
    for item in request.session.items:
        if launch_fixture in getattr(item, "fixturenames", ()):
            callspec = getattr(item, "callspec", None)
            selected.add(callspec.params.get("name") if callspec else unparametrized)
    return selected


def _slug(name: str, strategy: str) -> str:
    return f"{name.replace('/', '-')}-{strategy}"


def _rank1_writes_only_rng_state(writes: list[str], shards: bool = False) -> bool:
    """Rank 1 writes nothing in the run folder but its RNG state in checkpoints (and, with sharded FSDP
    checkpoints, its shards)."""
    allowed = ("rng_state_1.pth", ".distcp") if shards else ("rng_state_1.pth",)
    return all(w.endswith(allowed) or w.startswith("os.mkdir") for w in writes)


@pytest.fixture(scope="module")
def ddp_launch(tiny, request):
    """One 2-process DDP launch (recipes/accelerate/cpu_ddp.yaml), per-device batch 4 (global 8), running every
    selected row x strategy without dropout, and each row's `dropout_strategy` with dropout."""
    jobs = []
    selected = _selected_rows(request, "ddp_launch")
    for param in _real_rows():
        task, name = param.values
        if name not in selected:
            continue
        row = _row(task, name)
        runs = [(strategy, False) for strategy in row.strategies] + [(row.dropout_strategy, True)]
        for strategy, dropout in runs:
            job = f"ddp-{_slug(name, strategy)}-{'dropout' if dropout else 'no-dropout'}"
            config = tiny.config(row, strategy, job, dropout=dropout, use_cpu=True, per_device_train_batch_size=BATCH // 2)
            # the task's default: an evaluation before training where it has one, after which DDP must still train
            # as one process does (the Trainer's first evaluation prepares the model for evaluation only)
            config["data"].pop("baseline", None)
            jobs.append({"name": job, "config": config})
        # and at the default precision, as users run it (test_ddp_at_default_precision_records_float32_figures)
        job = f"ddp-{_slug(name, row.dropout_strategy)}-default-precision"
        config = tiny.config(row, row.dropout_strategy, job, use_cpu=True, per_device_train_batch_size=BATCH // 2)
        del config["speed"]["bf16"]
        jobs.append({"name": job, "config": config})
    return launch(tiny, "cpu_ddp.yaml", "ddp-launch", jobs)


def assert_matches_one_process(tiny, task, name, strategy, run_dir: Path):
    """Per-step losses (1e-4), final weights and metrics (1e-4) equal the single-process run at the same global
    batch; every evaluation example counted once."""
    row = _row(task, name)
    reference = single_run(tiny, task, name, strategy).run_dir
    got, want = _history(run_dir), _history(reference)
    assert [h["step"] for h in got] == [h["step"] for h in want] == list(range(1, STEPS + 1))
    for g, w in zip(got, want):
        assert g["loss"] == pytest.approx(w["loss"], rel=1e-4), (g, w)
    assert_same_weights(run_dir, reference, atol=row.weight_atol)
    metrics = _metrics(run_dir)
    assert_same_metrics(metrics, _metrics(reference), rel=1e-4)
    for split in ("validation", "test"):  # every evaluation example counted once
        rows = _eval_rows(tiny, row, split)
        if rows is not None:
            assert _evaluated(metrics[split]) == rows, split
    return metrics


@pytest.mark.parametrize("task, name, strategy", CELLS)
def test_ddp_without_dropout_matches_one_process(tiny, ddp_launch, task, name, strategy):
    stderr, results = ddp_launch
    job = f"ddp-{_slug(name, strategy)}-no-dropout"
    assert_matches_one_process(tiny, task, name, strategy, tiny.root / "runs" / job)
    assert results[0][job]["writes"], "rank 0 wrote nothing"
    assert results[1][job]["writes"] == [], results[1][job]["writes"]  # only rank 0 writes the run folder


@pytest.mark.parametrize("task, name", ROWS)
def test_ddp_with_dropout_and_cheap_dropout_matches_one_process(tiny, ddp_launch, task, name):
    """With dropout on, each process draws the masks of its own half batch: the runs match within the spread
    that dropout itself causes (per-step losses within 10%; a loss scaled by the process count, the defect this
    column guards against, is off by 100%). `speed.cheap_dropout` is on (hftl's `auto` on CPU) in both."""
    stderr, results = ddp_launch
    row = _row(task, name)
    job = f"ddp-{_slug(name, row.dropout_strategy)}-dropout"
    run_dir = tiny.root / "runs" / job
    reference = _train(_recipe_class(task), tiny.config(row, row.dropout_strategy, f"{job}-single", dropout=True)).run_dir
    assert "cheap dropout masks in" in stderr
    got, want = _history(run_dir), _history(reference)
    assert [h["step"] for h in got] == [h["step"] for h in want] == list(range(1, STEPS + 1))
    for g, w in zip(got, want):
        assert g["loss"] == pytest.approx(w["loss"], rel=0.1), (g, w)
    got_metrics, want_metrics = _metrics(run_dir), _metrics(reference)
    for split in ("validation", "test"):
        if "loss" in want_metrics[split]:  # preference tuning reports accuracies and margins, compared without dropout
            assert got_metrics[split]["loss"] == pytest.approx(want_metrics[split]["loss"], rel=0.1), split
        rows = _eval_rows(tiny, row, split)
        if rows is not None:
            assert _evaluated(got_metrics[split]) == rows, split
    assert results[1][job]["writes"] == [], results[1][job]["writes"]


@pytest.mark.parametrize("task, name", _real_rows())
def test_ddp_at_default_precision_records_float32_figures(tiny, ddp_launch, task, name):
    """DDP with `speed.bf16` at its default (`auto`: bf16 autocast where the CPU has native bf16): the manifest
    records the precision used, and the test figures, computed in float32 after bf16 training by both processes,
    are what `hftl evaluate` computes on the saved run in one process (the P column, under DDP)."""
    from hftl import load
    from hftl.trainer import bf16_is_fast

    row = _row(task, name)
    run_dir = tiny.root / "runs" / f"ddp-{_slug(name, row.dropout_strategy)}-default-precision"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["training"]["bf16"] is bf16_is_fast() and manifest["training"]["inference_precision"] == "float32"
    assert manifest["training"]["world_size"] == 2
    assert_recorded_test_figures_are_evaluates(run_dir, load(run_dir))


# -- 2-process FSDP on CPU ------------------------------------------------------------------------------------
#: the row whose FSDP run also saves checkpoints, in both state-dict types, and is resumed from them
FSDP_ROW = ("text-classification", "text-classification/encoder", "full")


#: rows FSDP cannot run, with what refuses (docs/reliability.md)
FSDP_REFUSED = {
    "masked-lm": "accelerate 1.15.0's fsdp2_prepare_model shards the output embedding (cls.predictions.decoder) in a "
    "group of its own, while the bias tied to it (cls.predictions.bias) stays in the root group; torch 2.13's "
    "fully_shard then raises \"ValueError: Parameter 'cls.predictions.decoder.bias' is shared with a parameter "
    "already managed by another FSDP group\" at the first forward pass",
}


def _fsdp_env(row: Row, state_dict_type: str = "FULL_STATE_DICT") -> dict:
    return {"FSDP_TRANSFORMER_CLS_TO_WRAP": LAYER_CLASS[row.model], "FSDP_STATE_DICT_TYPE": state_dict_type}


@pytest.fixture(scope="module")
def fsdp_launch(tiny, request):
    """One 2-process FSDP launch (recipes/accelerate/cpu_fsdp.yaml, per-device batch 4) running every row x
    strategy with FULL_STATE_DICT, and, on FSDP_ROW, checkpoints in both state-dict types resumed from step 3."""
    runs = tiny.root / "runs"
    jobs = []
    selected = _selected_rows(request, "fsdp_launch", unparametrized=FSDP_ROW[1])
    for param in _real_rows():
        task, name = param.values
        if name in FSDP_REFUSED or name not in selected:
            continue
        row = _row(task, name)
        for strategy in row.strategies:
            job = f"fsdp-{_slug(name, strategy)}"
            if (task, name, strategy) != FSDP_ROW:
                config = tiny.config(row, strategy, job, use_cpu=True, per_device_train_batch_size=BATCH // 2)
                config["data"].pop("baseline", None)  # the task's default, as in the DDP launch
                jobs.append({"name": job, "env": _fsdp_env(row), "config": config})
                continue
            for kind, state_dict_type in (("full", "FULL_STATE_DICT"), ("sharded", "SHARDED_STATE_DICT")):
                env = _fsdp_env(row, state_dict_type)
                for resumed in (False, True):
                    name_ = f"fsdp-{kind}" + ("-resumed" if resumed else "")
                    config = tiny.config(row, strategy, name_, use_cpu=True, per_device_train_batch_size=BATCH // 2,
                                         save_strategy="steps", save_steps=SAVE_STEPS, save_total_limit=5)
                    extra = {"resume": True, "copy_from": str(runs / f"fsdp-{kind}"),
                             "keep": f"checkpoint-{SAVE_STEPS}"} if resumed else {}
                    jobs.append({"name": name_, "config": config, "env": env, **extra})
    return launch(tiny, "cpu_fsdp.yaml", "fsdp-launch", jobs, HFTL_TEST_FSDP_ON_CPU="1")


def _fsdp_run(task, name, strategy) -> str:
    return "fsdp-full" if (task, name, strategy) == FSDP_ROW else f"fsdp-{_slug(name, strategy)}"


@pytest.mark.parametrize("task, name, strategy", CELLS)
def test_fsdp_on_cpu_matches_one_process_and_saves_loadable_weights(tiny, fsdp_launch, task, name, strategy):
    """FSDP2 (`fully_shard`, gloo) shards every transformer block of the row's model: per-step losses, weights and
    metrics equal one process at the same global batch; the run folder's weights (full model, or adapter) load
    without hftl; only rank 0 writes."""
    import transformers

    if name in FSDP_REFUSED:
        pytest.skip(FSDP_REFUSED[name])
    stderr, results = fsdp_launch
    job = _fsdp_run(task, name, strategy)
    run_dir = tiny.root / "runs" / job
    assert json.loads((run_dir / "manifest.json").read_text())["training"]["world_size"] == 2
    assert_matches_one_process(tiny, task, name, strategy, run_dir)
    auto_class = getattr(transformers, _recipe_class(task).auto_model_class)
    if strategy == "lora":
        from peft import PeftConfig

        assert PeftConfig.from_pretrained(run_dir).peft_type == "LORA"
    else:  # complete weights, loadable by transformers alone
        plain = auto_class.from_pretrained(run_dir, use_safetensors=True)
        assert not [k for k in plain.state_dict() if "lora" in k]
    assert results[0][job]["writes"], "rank 0 wrote nothing"
    assert _rank1_writes_only_rng_state(results[1][job]["writes"]), results[1][job]["writes"]


def test_fsdp_on_cpu_checkpoints_of_both_state_dict_types_resume(tiny, fsdp_launch):
    """FSDP_ROW with checkpoints every 3 steps, FULL_STATE_DICT and SHARDED_STATE_DICT, each resumed from a copy
    holding only its checkpoint-3: `--resume` continues from step 3 of an FSDP checkpoint to the uninterrupted
    run's weights; the sharded run folder also holds complete safetensors weights; rank 1 writes only its RNG
    state and, sharded, its shards."""
    import transformers

    stderr, results = fsdp_launch
    runs = tiny.root / "runs"
    assert (runs / "fsdp-full" / f"checkpoint-{SAVE_STEPS}" / "pytorch_model_fsdp.bin").is_file()  # FSDP ran
    assert (runs / "fsdp-sharded" / f"checkpoint-{SAVE_STEPS}" / "pytorch_model_fsdp_0").is_dir()
    assert not (runs / "fsdp-sharded" / f"checkpoint-{SAVE_STEPS}" / "model.safetensors").exists()
    task, name, strategy = FSDP_ROW
    assert_matches_one_process(tiny, task, name, strategy, runs / "fsdp-sharded")
    transformers.AutoModelForSequenceClassification.from_pretrained(runs / "fsdp-sharded", use_safetensors=True)
    for job in ("fsdp-full", "fsdp-sharded"):
        resumed = runs / f"{job}-resumed"
        assert f"Resuming from {resumed / f'checkpoint-{SAVE_STEPS}'} (step {SAVE_STEPS})" in stderr
        assert [h["step"] for h in _history(resumed)] == list(range(1, STEPS + 1))
        assert_same_weights(resumed, runs / job)
        assert_same_metrics(_metrics(resumed), _metrics(runs / job), rel=1e-4)
    rank1 = results[1]["fsdp-full"]["writes"]
    assert any(w.endswith("rng_state_1.pth") for w in rank1)
    assert _rank1_writes_only_rng_state(rank1), rank1
    rank1_sharded = results[1]["fsdp-sharded"]["writes"]
    assert any(w.endswith(".distcp") for w in rank1_sharded)
    assert _rank1_writes_only_rng_state(rank1_sharded, shards=True), rank1_sharded


def test_checkpoint_scanner_knows_sharded_fsdp_checkpoints(tmp_path):
    """A SHARDED_STATE_DICT checkpoint has no weights file, only accelerate's pytorch_model_fsdp_0/ folder."""
    folder = tmp_path / "checkpoint-4"
    (folder / "pytorch_model_fsdp_0").mkdir(parents=True)
    (folder / "trainer_state.json").write_text('{"global_step": 4}')
    assert "no model weights" in RunDir.checkpoint_problem(folder)  # shards still being written: no metadata yet
    (folder / "pytorch_model_fsdp_0" / ".metadata").write_bytes(b"x")
    assert RunDir.checkpoint_problem(folder) is None
    assert RunDir(tmp_path).last_checkpoint(quiet=True) == str(folder)


def test_image_augmentation_does_not_depend_on_what_was_drawn_before(tiny):
    """A resumed run (a fresh transform) draws for example 6 what the uninterrupted run drew after examples 0-5, at
    the same epoch: augmentation is a function of (seed, epoch, example), not of a generator's history."""
    task, name = "image-classification", "image-classification"
    if task not in registered_tasks():
        pytest.skip("no image-classification task registered")

    def train_split():
        recipe = _recipe_class(task)(tiny.config(_row(task, name), "full", "augmentation-unit"))
        return recipe, recipe.preprocess(recipe.load_data(), recipe.load_processor())["train"]

    recipe, uninterrupted = train_split()
    for i in range(6):
        uninterrupted[i]
    drawn = uninterrupted[6]["pixel_values"]
    resumed_recipe, resumed = train_split()
    assert torch.equal(resumed[6]["pixel_values"], drawn)
    resumed_recipe.training_epoch.epoch = 1
    assert not torch.equal(resumed[6]["pixel_values"], drawn)


def test_masked_lm_masks_do_not_depend_on_what_was_drawn_before(tiny):
    """A training block's masks are a function of (seed, epoch, block): the same whatever the global generator
    holds and whichever blocks share its batch (a resumed run, the half batch of a DDP process), other in
    another epoch."""
    task, name = "masked-lm", "masked-lm"
    if task not in registered_tasks():
        pytest.skip("no masked-lm task registered")
    recipe = _recipe_class(task)(tiny.config(_row(task, name), "full", "masks-unit"))
    tokenizer = recipe.load_processor()
    train = recipe.preprocess(recipe.load_data(), tokenizer)["train"]
    collator = recipe.data_collator(tokenizer)
    torch.manual_seed(0)
    first = collator([train[i] for i in range(4)])
    torch.manual_seed(1)
    torch.rand(5)
    later = collator([train[i] for i in (2, 3, 7)])
    assert (first["labels"] != -100).any()
    for key in ("input_ids", "labels"):
        assert torch.equal(later[key][:2], first[key][2:4]), key
    recipe.training_epoch.epoch = 1
    assert not torch.equal(collator([train[i] for i in (2, 3)])["labels"], first["labels"][2:4])
