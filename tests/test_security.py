"""Safe loading and secrets: safetensors by default, pickle and remote code only on request, no token leaks,
nothing written outside the output folder."""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
from pathlib import Path

import pytest
import yaml

from hftl.cli import main

PLANTED_ENV = "hf_PlantedEnvToken0123456789abcdefXYZ"
PLANTED_LOGIN = "hf_PlantedLoginToken9876543210fedcbaQRS"


class _Exploit:
    """Unpickling this writes a marker file: proof that a pickle ran code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "pwned"))


def _write_config(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _pickle_only_checkpoint(tiny_bert_dir: Path, folder: Path, payload) -> Path:
    shutil.copytree(tiny_bert_dir, folder)
    (folder / "model.safetensors").unlink()
    with (folder / "pytorch_model.bin").open("wb") as handle:
        pickle.dump(payload, handle)
    return folder


def test_pickle_only_checkpoint_refused_without_opt_in(text_config, tiny_bert_dir, tmp_path, capsys):
    marker = tmp_path / "pwned.txt"
    model = _pickle_only_checkpoint(tiny_bert_dir, tmp_path / "pickled", {"weights": _Exploit(marker)})
    path = _write_config(tmp_path, text_config(model_dir=model))
    for command in ("validate", "train"):
        assert main([command, str(path)]) == 2
        err = capsys.readouterr().err
        assert "holds only pickle weights (.bin)" in err and "model.allow_pickle: true" in err
    assert not marker.exists()
    assert not (tmp_path / "run").exists()


def test_pickle_checkpoint_loads_with_opt_in_and_a_warning(text_config, tiny_bert_dir, tmp_path, caplog):
    import torch
    from safetensors.torch import load_file

    state = load_file(tiny_bert_dir / "model.safetensors")
    model = _pickle_only_checkpoint(tiny_bert_dir, tmp_path / "pickled", None)
    torch.save(state, model / "pytorch_model.bin")
    config = text_config(model_dir=model, **{"model.allow_pickle": True, "training.num_train_epochs": 1})
    caplog.set_level(logging.WARNING)
    assert main(["train", str(_write_config(tmp_path, config))]) == 0
    assert "model.allow_pickle is true" in caplog.text and "arbitrary code" in caplog.text
    # the saved run itself is safetensors
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert not list((tmp_path / "run").glob("*.bin")) or [p.name for p in (tmp_path / "run").glob("*.bin")] == ["training_args.bin"]


def test_safetensors_preferred_even_when_pickle_is_present(tiny_bert_dir, tmp_path):
    """A planted pickle next to safetensors is never opened."""
    from transformers import AutoModelForSequenceClassification

    from hftl.config.schema import ModelConfig
    from hftl.modeling import load_pretrained_model

    marker = tmp_path / "pwned.txt"
    folder = tmp_path / "both"
    shutil.copytree(tiny_bert_dir, folder)
    with (folder / "pytorch_model.bin").open("wb") as handle:
        pickle.dump({"weights": _Exploit(marker)}, handle)
    model, _ = load_pretrained_model(AutoModelForSequenceClassification, ModelConfig(name_or_path=str(folder)), num_labels=2)
    assert model is not None and not marker.exists()


def test_remote_code_is_not_run_unless_trusted(text_config, tiny_bert_dir, tmp_path, capsys):
    from hftl.config.schema import ModelConfig
    from hftl.modeling import load_kwargs

    assert ModelConfig(name_or_path="x").trust_remote_code is False
    assert load_kwargs(ModelConfig(name_or_path="x"))["trust_remote_code"] is False

    marker = tmp_path / "remote-code-ran.txt"
    folder = tmp_path / "custom"
    shutil.copytree(tiny_bert_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="evil-bert", auto_map={
        "AutoConfig": "configuration_evil.EvilConfig",
        "AutoModelForSequenceClassification": "modeling_evil.EvilModel",
    })
    (folder / "config.json").write_text(json.dumps(config))
    code = f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
    (folder / "configuration_evil.py").write_text(code + "from transformers import BertConfig\nclass EvilConfig(BertConfig):\n    model_type = 'evil-bert'\n")
    (folder / "modeling_evil.py").write_text(code)
    path = _write_config(tmp_path, text_config(model_dir=folder))
    for command in ("validate", "train"):
        assert main([command, str(path)]) == 2
        err = capsys.readouterr().err
        assert "ships its own modelling code" in err and "model.trust_remote_code: true" in err
    assert not marker.exists()


def test_tokens_never_reach_the_run_folder_or_logs(text_config, tmp_path, monkeypatch, capsys, caplog):
    """HF_TOKEN and a login token file are planted; the run folder, checkpoints and every log line are
    scanned for them. The run also writes nothing outside its output folder (and the datasets cache)."""
    home = tmp_path / "hf_home"
    home.mkdir()
    (home / "token").write_text(PLANTED_LOGIN)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_TOKEN", PLANTED_ENV)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    caplog.set_level(logging.DEBUG)
    config = text_config(**{"training.num_train_epochs": 1, "training.save_steps": 3,
                            "training.output_dir": "out/run", "hub.repo_id": "me/secret-test"})
    config_path = _write_config(tmp_path, config)
    before = {p for p in tmp_path.rglob("*")}
    assert main(["train", str(config_path)]) == 0
    run_dir = work / "out" / "run"
    assert (run_dir / "metrics.json").is_file() and list(run_dir.glob("checkpoint-*"))

    scanned = 0
    for file in run_dir.rglob("*"):
        if file.is_file():
            data = file.read_bytes()
            scanned += 1
            for token in (PLANTED_ENV, PLANTED_LOGIN):
                assert token.encode() not in data, f"{token} written to {file}"
                assert token[3:].encode() not in data, f"part of {token} written to {file}"
    assert scanned >= 10
    captured = capsys.readouterr()
    logs = caplog.text + captured.out + captured.err
    assert logs.strip()
    for token in (PLANTED_ENV, PLANTED_LOGIN):
        assert token not in logs and token[3:] not in logs

    # Nothing outside the output folder (the datasets cache lives outside tmp_path in these tests).
    created = {p for p in tmp_path.rglob("*")} - before
    outside = [p for p in created if run_dir not in p.parents and p != run_dir and p not in run_dir.parents]
    assert not outside, outside


def test_relative_paths_resolve_against_the_config_file(text_config, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "project"
    folder.mkdir()
    config = text_config()
    for split in ("train", "validation", "test"):
        name = Path(config["data"][split]).name
        shutil.copy(config["data"][split], folder / name)
        config["data"][split] = name
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    from hftl import load_config

    loaded = load_config(path)
    assert Path(loaded.data.train) == folder / "train.tsv"
    assert main(["validate", str(path)]) == 0


def test_a_run_folder_cannot_turn_on_remote_code_or_pickle_by_itself(text_config, tiny_bert_dir, tmp_path):
    """A downloaded run folder whose config.yaml says trust_remote_code / allow_pickle: loading it takes both
    switches from the caller only, so the base checkpoint's shipped code never runs."""
    import yaml

    from hftl import load
    from hftl.tasks import recipe_for_run

    marker = tmp_path / "remote-code-ran.txt"
    base = tmp_path / "evil-base"
    shutil.copytree(tiny_bert_dir, base)
    config = json.loads((base / "config.json").read_text())
    config.update(model_type="evil-bert", auto_map={"AutoConfig": "configuration_evil.EvilConfig",
                                                    "AutoModelForSequenceClassification": "modeling_evil.EvilModel"})
    (base / "config.json").write_text(json.dumps(config))
    code = f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
    (base / "configuration_evil.py").write_text(code + "from transformers import BertConfig\nclass EvilConfig(BertConfig):\n    model_type = 'evil-bert'\n")
    (base / "modeling_evil.py").write_text(code)

    run = tmp_path / "downloaded-run"  # an adapter run over that base, as someone else saved it
    run.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_bert_dir / name, run / name)
    saved = text_config(model_dir=base)
    saved["model"].update(strategy="lora", trust_remote_code=True, allow_pickle=True)
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    (run / "labels.json").write_text(json.dumps({"id2label": {"0": "neg", "1": "pos"}, "label2id": {"neg": 0, "pos": 1}}))
    (run / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "base_model_name_or_path": str(base)}))

    model = recipe_for_run(run).config.model
    assert (model.trust_remote_code, model.allow_pickle) == (False, False)
    assert recipe_for_run(run, trust_remote_code=True).config.model.trust_remote_code  # the caller may
    with pytest.raises(Exception):
        load(run)  # the base needs its own code, which is not trusted
    assert not marker.exists()


def test_gguf_checkpoints_are_dequantised_explicitly(monkeypatch, tmp_path):
    """Whether transformers keeps GGUF layers packed depends on the `kernels` package being installed; hftl asks
    for dense weights itself, so training never meets packed layers."""
    from transformers import AutoModelForCausalLM

    from hftl.config.schema import ModelConfig
    from hftl.modeling import load_pretrained_model

    seen = {}

    def fake_from_pretrained(path, **kwargs):
        seen.update(kwargs)
        raise RuntimeError("stop before loading")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", fake_from_pretrained)
    with pytest.raises(RuntimeError, match="stop before loading"):
        load_pretrained_model(AutoModelForCausalLM, ModelConfig(name_or_path=str(tmp_path), gguf_file="model.Q4_1.gguf"))
    assert seen["gguf_file"] == "model.Q4_1.gguf" and seen["quantization_config"].dequantize is True
