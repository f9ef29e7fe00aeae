"""Bad configs and bad data: each mistake gives one clear error (file / row / field, and the fix), exit
status 2, no traceback, and nothing heavy happens first.

Every case runs through the real CLI (`hftl validate` and `hftl train`) with model loading, tokenizer
loading and `Trainer.train` replaced by functions that fail the test: the error must come before them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from hftl.cli import main
from tests.conftest import make_sentences, write_tsv


def _forbid(*args, **kwargs):
    raise AssertionError("a model, tokenizer or training loop was started before the bad input was reported")


@pytest.fixture
def nothing_heavy(monkeypatch):
    """Any model load, tokenizer load or training step fails the test."""
    from transformers import PreTrainedModel, Trainer

    from hftl.tasks import registered_tasks

    # the task modules are imported now, not under the patch: one first imported below would bind `_forbid` in
    # its namespace (`from hftl.modeling import ...`) for every later test of the session
    registered_tasks()
    monkeypatch.setattr("hftl.modeling.load_pretrained_model", _forbid)
    monkeypatch.setattr("hftl.modeling.load_tokenizer", _forbid)
    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(_forbid))
    monkeypatch.setattr(Trainer, "train", _forbid)


# -- helpers that build the bad input --------------------------------------------------------------
def _set(dotted: str, value):
    def change(cfg, tmp):
        node = cfg
        *parents, key = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[key] = value

    return change


def _drop(dotted: str):
    def change(cfg, tmp):
        *parents, key = dotted.split(".")
        node = cfg
        for part in parents:
            node = node[part]
        del node[key]

    return change


def _data_file(split: str, name: str, content: str | bytes):
    """Replace data.<split> by a file `name` holding `content`."""

    def change(cfg, tmp):
        path = tmp / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        cfg["data"][split] = str(path)

    return change


def _rows(split: str, rows, name: str | None = None):
    """Replace data.<split> by a TSV of `rows` (sentence, label)."""

    def change(cfg, tmp):
        cfg["data"][split] = str(write_tsv(tmp / (name or f"{split}-bad.tsv"), rows))

    return change


def _no_validation(train_rows: int):
    def change(cfg, tmp):
        cfg["data"].pop("validation")
        cfg["data"]["train"] = str(write_tsv(tmp / "small.tsv", make_sentences(train_rows, seed=5)))

    return change


def _model_folder(kind: str):
    def change(cfg, tmp):
        folder = tmp / f"model-{kind}"
        folder.mkdir()
        if kind == "vit":  # an image checkpoint: config only, it never gets to load weights
            from transformers import ViTConfig

            ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(folder)
        elif kind == "no-config":
            (folder / "model.safetensors").write_bytes(b"")
        elif kind == "bad-json":
            (folder / "config.json").write_text("{not json", encoding="utf-8")
        cfg["model"]["name_or_path"] = str(folder)

    return change


def _existing_output(kind: str):
    def change(cfg, tmp):
        out = Path(cfg["training"]["output_dir"])
        if kind == "file":
            out.write_text("x")
        elif kind == "checkpoint":
            (out / "checkpoint-4").mkdir(parents=True)
            (out / "checkpoint-4" / "trainer_state.json").write_text('{"global_step": 4}')
            (out / "checkpoint-4" / "model.safetensors").write_bytes(b"x")
        else:
            out.mkdir()
            (out / "metrics.json").write_text("{}")

    return change


TRAIN_CSV = "sentence,label\nthe film was great,pos\nawful and boring,neg\n"
# (id, change, substrings the one error must contain)
CASES = [
    # -- config: keys, types, ranges --------------------------------------------------------------
    ("misspelt-section", lambda c, t: c.update(trainng=c.pop("training")), ["unknown key 'trainng'", "Did you mean 'training'"]),
    ("misspelt-model-key", _set("model.stratgy", "lora"), ["model: unknown key 'stratgy'", "Did you mean 'strategy'"]),
    ("misspelt-data-key", _set("data.text_colum", "x"), ["data: unknown key 'text_colum'", "Did you mean 'text_column'"]),
    ("misspelt-training-key", _set("training.learning_rat", 1e-3), ["training: unknown key 'learning_rat'", "Did you mean 'learning_rate'"]),
    ("misspelt-lora-key", _set("model.lora", {"rank": 8}), ["model.lora: unknown key 'rank'", "Allowed keys"]),
    ("bad-strategy", _set("model.strategy", "lorra"), ["model.strategy", "'lorra'", "Did you mean 'lora'"]),
    ("wrong-type-epochs", _set("training.num_train_epochs", "three"), ["training.num_train_epochs: expected float", "'three'"]),
    ("wrong-type-max-length", _set("data.max_length", "long"), ["data.max_length: expected int", "'long'"]),
    ("negative-learning-rate", _set("training.learning_rate", -1e-4), ["training.learning_rate: must be positive", "-0.0001"]),
    ("zero-batch-size", _set("training.per_device_train_batch_size", 0), ["training.per_device_train_batch_size: must be positive"]),
    ("lora-r-zero", _set("model.lora", {"r": 0}), ["model.lora.r: must be a positive integer, got 0"]),
    ("lora-dropout-range", _set("model.lora", {"dropout": 1.5}), ["model.lora.dropout: must be in [0, 1)"]),
    ("max-length-too-small", _set("data.max_length", 4), ["data.max_length: must be at least 8"]),
    ("max-length-above-model", _set("data.max_length", 512), ["data.max_length: 512 exceeds the model's limit of 64", "at most 64"]),
    ("validation-fraction", _set("data.validation_fraction", 1.5), ["data.validation_fraction: must be between 0 and 1"]),
    ("max-train-samples", _set("data.max_train_samples", 0), ["data.max_train_samples: must be a positive integer"]),
    ("missing-task", lambda c, t: c.pop("task"), ["missing required key 'task'"]),
    ("unknown-task", _set("task", "text-clasification"), ["unknown task 'text-clasification'", "Did you mean 'text-classification'"]),
    ("missing-model-section", lambda c, t: c.pop("model"), ["missing required section 'model'"]),
    ("missing-train", _drop("data.train"), ["data: missing required key 'train'"]),
    ("moved-warmup-ratio", _set("training.warmup_ratio", 0.1), ["training.warmup_ratio", "warmup_steps"]),
    ("moved-group-by-length", _set("training.group_by_length", True), ["training.group_by_length", "speed.group_by_length"]),
    ("overwrite-and-resume", lambda c, t: c.update(overwrite=True, resume=True), ["overwrite and resume are both true"]),
    ("trainable-layers-not-freeze", _set("model.trainable_layers", 1), ["model.trainable_layers: only applies to strategy 'freeze'"]),
    ("hub-push-without-repo", _set("hub", {"push": True}), ["hub.repo_id: required when push is true"]),
    ("training-combination", lambda c, t: c["training"].update(load_best_model_at_end=True, eval_strategy="no"),
     ["training: --load_best_model_at_end requires the save and eval strategy to match"]),
    ("bad-scheduler", _set("training.lr_scheduler_type", "cosine_foo"), ["training", "cosine_foo is not a valid SchedulerType"]),
    ("token-in-config", _set("training.hub_token", "hf_secret"), ["training.hub_token", "never put a token in a config"]),
    ("bad-speed-value", _set("speed.padding", "dynamic"), ["speed.padding", "'dynamic'"]),
    # -- output folder ------------------------------------------------------------------------------
    ("output-exists", _existing_output("run"), ["training.output_dir", "already holds a finished run", "--resume", "--overwrite"]),
    ("output-has-checkpoint", _existing_output("checkpoint"), ["unfinished run (last complete checkpoint: checkpoint-4)", "--resume"]),
    ("output-is-a-file", _existing_output("file"), ["training.output_dir", "is not a folder"]),
    # -- data files -----------------------------------------------------------------------------------
    ("missing-train-file", _set("data.train", "/nonexistent/train.csv"), ["data.train: /nonexistent/train.csv does not exist"]),
    ("relative-missing-file", _set("data.test", "data/test.tsv"), ["data.test: data/test.tsv does not exist"]),
    ("empty-file", _data_file("train", "empty.csv", ""), ["data.train", "empty.csv is empty"]),
    ("header-only", _data_file("train", "header.csv", "sentence,label\n"), ["data.train", "header.csv has no data rows"]),
    ("unsupported-format", _data_file("train", "train.xlsx", "PK"), ["data.train", "unsupported format '.xlsx'", ".csv"]),
    ("folder-not-dataset", lambda c, t: c["data"].update(train=str(t)), ["data.train", "is a folder but not a saved dataset"]),
    ("ragged-csv-extra-field", _data_file("train", "r.csv", TRAIN_CSV + "nice, really nice,pos\nok,neg\n"),
     ["data.train", "r.csv: ragged rows", "line 4 has 3", "double quotes"]),
    ("ragged-csv-missing-field", _data_file("train", "m.csv", TRAIN_CSV + "no label here\n"), ["data.train", "m.csv: ragged rows", "line 4 has 1"]),
    ("ragged-tsv", _data_file("validation", "v.tsv", "sentence\tlabel\ngood\tpos\nbad\tstuff\tneg\n"),
     ["data.validation", "v.tsv: ragged rows", "line 3 has 3", "tab inside a text field"]),
    ("bad-encoding", _data_file("train", "latin1.csv", TRAIN_CSV.encode() + "caf\xe9 au lait,pos\n".encode("latin-1")),
     ["data.train", "latin1.csv: not UTF-8", "line 4", "iconv"]),
    ("bad-jsonl-line", _data_file("train", "t.jsonl", '{"sentence": "good", "label": "pos"}\n{"sentence": "bad", \n'),
     ["data.train", "t.jsonl: line 2 is not valid JSON"]),
    ("jsonl-not-object", _data_file("train", "a.jsonl", '{"sentence": "good", "label": "pos"}\n["bad", "neg"]\n'),
     ["data.train", "a.jsonl: line 2 is a JSON list"]),
    ("missing-text-column", _set("data.text_column", "text"), ["data.train", "has no text_column column 'text'", "Columns: sentence, label"]),
    ("misspelt-label-column", _set("data.label_column", "lable"), ["data.train", "has no label_column column 'lable'", "Did you mean 'label'"]),
    ("missing-pair-column", _set("data.text_pair_column", "hypothesis"), ["data.train", "has no text_pair_column column 'hypothesis'"]),
    ("empty-text-cell", _rows("train", [("good film", "pos"), ("", "neg"), ("bad film", "neg")]),
     ["data.train", "1 row(s) have an empty or non-text 'sentence' cell", "line 3"]),
    ("blank-text-cell", _rows("test", [("good film", "pos"), ("   ", "neg")]), ["data.test", "'sentence' cell", "line 3: '   '"]),
    ("missing-label-cell", _rows("train", [("good film", "pos"), ("bad film", ""), ("fine", "neg")]),
     ["data.train", "1 row(s) have no 'label'", "line 3"]),
    ("unseen-label-validation", _rows("validation", [("good", "pos"), ("meh", "neutral"), ("bad", "neg")]),
     ["data.validation", "label(s) 'neutral' do not occur in the training data", "line 3", "Known labels: neg, pos"]),
    ("unseen-label-test", _rows("test", [("good", "positive"), ("bad", "neg")]),
     ["data.test", "'positive' do not occur in the training data", "line 2"]),
    ("single-class", _rows("train", [("good", "pos"), ("great", "pos"), ("fine", "pos")]),
     ["data.train", "single class in 'label' ('pos')", "at least two"]),
    ("single-class-after-max-train-samples", lambda c, t: (
        _rows("train", [("good", "pos"), ("great", "pos"), ("bad", "neg")])(c, t), c["data"].update(max_train_samples=2)),
     ["data.train: the first 2 rows of", "single class"]),
    ("too-few-rows-for-validation-split", _no_validation(4), ["data.train: 4 rows are too few to hold out validation_fraction 0.1", "data.validation"]),
    # -- model -----------------------------------------------------------------------------------------
    ("model-path-missing", _set("model.name_or_path", "./no-such-model"), ["model.name_or_path: '", "/no-such-model' does not exist"]),
    ("hub-id-unreachable", _set("model.name_or_path", "someone/no-such-model"),
     ["model.name_or_path: 'someone/no-such-model'", "could not be fetched from the Hub", "HF_HUB_OFFLINE"]),
    ("packaged-unknown", _set("model.name_or_path", "packaged:all-MiniLM-L6"), ["no packaged checkpoint 'all-MiniLM-L6'", "Did you mean 'all-MiniLM-L6-v2'"]),
    ("model-folder-without-config", _model_folder("no-config"), ["model.name_or_path", "has no config.json"]),
    ("model-config-not-json", _model_folder("bad-json"), ["model.name_or_path", "config.json is not valid JSON"]),
    ("wrong-kind-of-checkpoint", _model_folder("vit"), ["'vit' checkpoint", "has no AutoModelForSequenceClassification head", "bert"]),
    ("lora-targets-match-nothing", _set("model.lora", {"target_modules": ["q_proj", "v_proj"]}),
     ["model.lora.target_modules: ['q_proj', 'v_proj'] match no Linear layer", "query"]),
    ("too-many-trainable-layers", lambda c, t: c["model"].update(strategy="freeze", trainable_layers=5),
     ["model.trainable_layers: 5 asked, but the model has 2 transformer blocks"]),
]
# a column missing from every file is reported once per file
PER_FILE = {"missing-text-column", "misspelt-label-column", "missing-pair-column"}
LORA_CASES = {"lora-targets-match-nothing", "lora-r-zero", "lora-dropout-range", "misspelt-lora-key"}


@pytest.mark.parametrize("command", ["validate", "train"])
@pytest.mark.parametrize("case_id, change, expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_error_before_any_model_loads(
    command, case_id, change, expected, text_config, tmp_path, capsys, nothing_heavy
):
    config = text_config()
    if case_id in LORA_CASES:
        config["model"]["strategy"] = "lora"
    change(config, tmp_path)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    out_dir = Path(config.get("training", {}).get("output_dir", tmp_path / "run"))
    existed = out_dir.exists()

    started = time.perf_counter()
    status = main([command, str(path)])
    elapsed = time.perf_counter() - started
    err = capsys.readouterr().err

    assert status == 2, err
    assert f"hftl {command}: error:" in err
    assert "Traceback" not in err
    for text in expected:
        assert text in err, f"{text!r} not in:\n{err}"
    one = "3 problem(s)" if case_id in PER_FILE else "1 problem(s)"
    assert one in err or "problem(s)" not in err, f"expected {one}:\n{err}"
    assert out_dir.exists() == existed, "the output folder was touched"
    assert elapsed < 10, f"took {elapsed:.1f}s: checks must fail fast"


def test_every_problem_is_reported_at_once(text_config, tmp_path, capsys, nothing_heavy):
    config = text_config(**{"training.learning_rate": -1, "model.strategy": "lorra", "data.max_length": 2})
    config["trainng"] = {}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "4 problem(s)" in err and f"in {path}" in err


@pytest.mark.parametrize("case", [
    ("not-yaml", "task: [unclosed\n", "not valid YAML"),
    ("a-list", "- task\n- model\n", "top level must be a mapping"),
])
def test_unreadable_config_file(case, tmp_path, capsys, nothing_heavy):
    name, text, expected = case
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert expected in err and str(path) in err and "Traceback" not in err


def test_missing_config_file_and_bad_override(text_config, tmp_path, capsys, nothing_heavy):
    assert main(["train", str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(text_config()))
    assert main(["validate", str(path), "--set", "training.learning_rate"]) == 2
    err = capsys.readouterr().err
    assert "--set" in err and "expected KEY=VALUE" in err
    assert main(["validate", str(path), "--set", "training.learning_rat=1"]) == 2
    assert "Did you mean 'learning_rate'" in capsys.readouterr().err


def test_good_config_validates(text_config, tmp_path, capsys, nothing_heavy):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(text_config(**{"model.strategy": "lora"})))
    assert main(["validate", str(path)]) == 0
    assert "OK" in capsys.readouterr().out
    assert not (tmp_path / "run").exists()


def test_row_checks_follow_the_loader(tmp_path, text_config, capsys, nothing_heavy):
    """Quoted commas and tabs-free TSV quotes are fine: no false alarms on valid files."""
    train = tmp_path / "quoted.csv"
    train.write_text('sentence,label\n"good, really good",pos\n"bad ""film""",neg\n\n"multi\nline",pos\n', encoding="utf-8")
    dev = tmp_path / "dev.tsv"
    dev.write_text('sentence\tlabel\na "quote in tsv\tpos\nbad\tneg\n', encoding="utf-8")
    rows = [{"sentence": "good", "label": 1}, {"sentence": "bad", "label": 0}]
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = text_config(**{"data.train": str(train), "data.validation": str(dev), "data.test": str(dev)})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err
    from hftl.data.checks import read_table

    table = read_table(str(train))
    assert table.values["sentence"] == ["good, really good", 'bad "film"', "multi\nline"]
    assert [table.where(i) for i in range(3)] == ["line 2", "line 3", "line 5"]
    assert read_table(str(test)).values["label"] == [1, 0]


def test_cli_process_exits_2_without_traceback(text_config, tmp_path):
    """The real process: exit status 2, the message on stderr, no traceback; an offline Hub id fails fast."""
    config = text_config(**{"model.name_or_path": "someone/no-such-model"})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "hftl.cli", "train", str(path)], capture_output=True, text=True,
                          env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "could not be fetched from the Hub" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert time.perf_counter() - started < 60
    assert not (tmp_path / "run").exists()


def test_a_config_without_output_dir_saves_under_runs_named_after_it(text_config, tmp_path, monkeypatch, nothing_heavy):
    from hftl import load_config

    config = text_config()
    del config["training"]["output_dir"]
    path = tmp_path / "my-sst2.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert load_config(path).output_dir == str(Path("runs") / "my-sst2")


def test_structural_and_data_mistakes_are_reported_together(text_config, tmp_path, capsys, nothing_heavy):
    """Six mistakes, of every kind (unknown key, bad value, missing file, wrong column in two files, bad LoRA
    target): one message lists them all, exit 2, no traceback."""
    config = text_config()
    config["model"].update(strategy="lora", lora={"target_modules": ["q_proj"]})
    config["training"]["learning_rat"] = 1e-3
    config["speed"]["padding"] = "dynamic"
    config["data"].update(train=str(tmp_path / "missing.tsv"), text_column="sentense")
    path = tmp_path / "five.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    status = main(["validate", str(path)])
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err
    for text in ["6 problem(s)", "unknown key 'learning_rat'", "speed.padding", "missing.tsv does not exist",
                 "dev.tsv has no text_column column 'sentense'", "test.tsv has no text_column column 'sentense'",
                 "model.lora.target_modules: ['q_proj'] match no Linear layer"]:
        assert text in err, f"{text!r} not in:\n{err}"
