"""Config loading and validation: every problem reported at once, before anything heavy happens."""

import subprocess
import sys

import pytest
import yaml

from hftl import load_config
from hftl.errors import ConfigError


def problems_of(config, overrides=()):
    with pytest.raises(ConfigError) as info:
        load_config(config, overrides)
    return "\n".join(info.value.problems)


def test_valid_config_loads(text_config):
    config = load_config(text_config())
    assert config.task == "text-classification"
    assert config.data.text_column == "sentence"
    assert config.model.lora.target_modules == "auto"


def test_misspelt_keys_get_suggestions(text_config):
    config = text_config()
    config["model"]["stratgy"] = "lora"
    config["training"]["learning_rat"] = 1e-4
    config["data"]["text_colum"] = "x"
    message = problems_of(config)
    assert "unknown key 'stratgy'" in message and "Did you mean 'strategy'" in message
    assert "Did you mean 'learning_rate'" in message
    assert "Did you mean 'text_column'" in message


def test_wrong_types_and_ranges_all_reported(text_config):
    config = text_config(**{"training.learning_rate": -1.0, "data.max_length": "long"})
    config["model"]["lora"] = {"r": 0}
    message = problems_of(config)
    assert "learning_rate: must be positive" in message
    assert "max_length: expected int, got str" in message
    assert "r: must be a positive integer" in message


def test_bad_choice(text_config):
    assert "expected one of 'full' | 'freeze' | 'lora'" in problems_of(text_config(**{"model.strategy": "ful"}))


def test_missing_file_and_label_column(text_config, tmp_path):
    config = text_config(**{"data.test": str(tmp_path / "nope.tsv"), "data.label_column": "lable"})
    message = problems_of(config)
    assert "nope.tsv does not exist" in message
    assert "no label_column column 'lable'" in message and "Did you mean 'label'" in message


def test_trainable_layers_only_with_freeze(text_config):
    assert "only applies to strategy 'freeze'" in problems_of(text_config(**{"model.trainable_layers": 1}))


def test_removed_transformers_keys_point_to_replacements(text_config):
    message = problems_of(text_config(**{"training.warmup_ratio": 0.1, "training.group_by_length": True}))
    assert "use warmup_steps" in message and "speed.group_by_length" in message


def test_overrides_parse_yaml_values(text_config):
    config = load_config(text_config(), ["training.learning_rate=1e-4", "model.strategy=lora", "model.lora.r=4"])
    assert config.training["learning_rate"] == 1e-4
    assert (config.model.strategy, config.model.lora.r) == ("lora", 4)
    assert "expected KEY=VALUE" in problems_of(text_config(), ["model.strategy"])


def test_relative_paths_resolve_against_config_file(text_config, tmp_path):
    config = text_config()
    config["data"] = {**config["data"], "train": "train.tsv", "validation": "dev.tsv", "test": "./test.tsv"}
    path = tmp_path / "run.yaml"  # the fixture data lives in tmp_path too
    path.write_text(yaml.safe_dump(config))
    loaded = load_config(path)
    assert loaded.data.train == str((tmp_path / "train.tsv").resolve())


def test_existing_output_dir_is_not_overwritten(text_config, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.json").write_text("{}")
    assert "already holds a finished run" in problems_of(text_config())
    assert load_config(text_config(), ["overwrite=true"]).overwrite
    (tmp_path / "run" / "metrics.json").unlink()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    assert "already holds files" in problems_of(text_config())


def test_cli_exits_2_with_one_paragraph_no_traceback(text_config, tmp_path):
    config = text_config()
    config["model"]["stratgy"] = "lora"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.run([sys.executable, "-m", "hftl.cli", "validate", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "Did you mean 'strategy'" in proc.stderr and str(path) in proc.stderr


def test_every_shipped_config_parses():
    from pathlib import Path

    from hftl.config.load import parse_config, read_yaml
    from hftl.tasks import task_data_classes

    configs = sorted((Path(__file__).resolve().parent.parent / "recipes" / "configs").rglob("*.yaml"))
    assert configs
    for path in configs:
        parse_config(read_yaml(path), task_data_classes(), str(path))  # schema only: data files may be absent on CI


def test_config_reference_is_up_to_date():
    from pathlib import Path

    from hftl.reference import render

    docs = Path(__file__).resolve().parent.parent / "docs" / "config.md"
    assert docs.read_text() == render(), "regenerate it: python -m hftl.reference > docs/config.md"


def test_config_overrides_checked_before_loading(text_config):
    config = text_config(**{"model.config_overrides": {
        "hidden_dropout_prob": "none",  # a string where the checkpoint has a float
        "hiden_size": 16,               # misspelt
        "num_labels": 3,                # hftl sets it from the data
    }})
    message = problems_of(config)
    assert "config_overrides.hidden_dropout_prob: expected a value like the checkpoint's 0.1" in message
    assert "config_overrides.hiden_size: not a setting" in message and "Did you mean 'hidden_size'" in message
    assert "config_overrides.num_labels: hftl sets this itself" in message
    shapes = problems_of(text_config(**{"model.config_overrides": {"intermediate_size": 48}}))
    assert "would change the shape of" in shapes and "intermediate.dense.weight" in shapes


def test_config_overrides_reach_the_model(text_config):
    import torch

    from hftl import TextClassificationRecipe
    from hftl.data.labels import LabelMap

    config = load_config(text_config(**{"model.config_overrides": {"hidden_dropout_prob": 0.0,
                                                                   "attention_probs_dropout_prob": 0}}))
    recipe = TextClassificationRecipe(config)
    model, newly_initialised = recipe.load_model(recipe.load_processor(), LabelMap(("neg", "pos")))
    assert model.config.hidden_dropout_prob == 0.0 and model.config.attention_probs_dropout_prob == 0
    assert not any(m.p for m in model.modules() if isinstance(m, torch.nn.Dropout))
    assert not any(name.startswith("bert.encoder") for name in newly_initialised), newly_initialised
