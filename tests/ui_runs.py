"""A runs folder for the UI tests: a tiny finished run of every task, a seed group, an interrupted run, a
half-written one and a corrupt one, with the data they were trained on under `data/`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from conftest import make_sentences, write_tsv
from test_image_classification import COLOURS, colour_image
from test_token_classification import make_sentences as ner_sentences, write_conll

#: run name -> (task, model fixture key, data key, strategy)
RUNS = {
    "text-bert-full": ("text-classification", "bert", "text", "full"),
    "image-vit-freeze": ("image-classification", "vit", "image", "freeze"),
    "ner-bert-lora": ("token-classification", "bert", "ner", "lora"),
    "clm-gpt2-lora": ("causal-lm", "gpt2", "lm", "lora"),
    "mlm-bert-full": ("masked-lm", "bert", "mlm", "full"),
}


def write_data(root: Path) -> dict[str, dict]:
    """Small data of every task under `root/data`; the `data` section of each task's config."""
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    text = {n: write_tsv(data / f"{n}.tsv", make_sentences(k, seed=s)) for n, k, s in (("train", 96, 1), ("dev", 16, 2),
                                                                                       ("test", 16, 3))}
    lm = {}
    for name, k, seed in (("train", 60, 11), ("dev", 12, 12), ("test", 12, 13)):
        lm[name] = data / f"lm-{name}.txt"
        lm[name].write_text("\n".join(s for s, _ in make_sentences(k, seed=seed)) + "\n", encoding="utf-8")
    images = {}
    for name, k, seed in (("train", 24, 1), ("dev", 9, 2), ("test", 9, 3)):
        rng, labels = np.random.default_rng(seed), list(COLOURS)
        for i in range(k):
            folder = data / f"images-{name}" / labels[i % len(labels)]
            folder.mkdir(parents=True, exist_ok=True)
            colour_image(COLOURS[labels[i % len(labels)]], rng).save(folder / f"{i}.png")
        images[name] = data / f"images-{name}"
    ner = {n: write_conll(data / f"ner-{n}.txt", ner_sentences(k, seed=s))
           for n, k, s in (("train", 32, 1), ("dev", 11, 2), ("test", 13, 3))}

    def split(files):
        return {"train": str(files["train"]), "validation": str(files["dev"]), "test": str(files["test"])}

    return {
        "text": {**split(text), "text_column": "sentence", "label_column": "label", "max_length": 32},
        "image": split(images),
        "ner": {**split(ner), "max_length": 32, "stride": 8},
        "lm": {**split(lm), "block_size": 16, "baseline": False},
        "mlm": {**split(lm), "block_size": 16, "baseline": False},
    }


def run_config(root: Path, name: str, task: str, model: Path, data: dict, strategy: str, **training) -> dict:
    return {
        "task": task,
        "model": {"name_or_path": str(model), "strategy": strategy, "lora": {"r": 4, "alpha": 8}},
        "data": data,
        "training": {"output_dir": str(root / name), "num_train_epochs": 1, "learning_rate": 5e-3,
                     "per_device_train_batch_size": 8, "per_device_eval_batch_size": 8, "seed": 13,
                     "logging_steps": 1, **training},
        "speed": {"bf16": False},
    }


def make_runs_root(root: Path, models: dict[str, Path]) -> dict[str, Path]:
    """Train the tiny runs into `root`; returns run name -> folder. `models`: {'bert', 'gpt2', 'vit'} -> folder."""
    from hftl.preflight import load_config
    from hftl.runner import run_recipe
    from hftl.seeds import run_seeds
    from hftl.tasks import get_recipe_class

    data = write_data(root)
    made = {}
    for name, (task, model, data_key, strategy) in RUNS.items():
        # one run that learns, with curves over three epochs; the others quick
        longer = {"num_train_epochs": 3, "per_device_train_batch_size": 16} if name == "text-bert-full" else {}
        config = load_config(run_config(root, name, task, models[model], data[data_key], strategy, **longer))
        made[name] = run_recipe(get_recipe_class(task)(config)).run_dir
    seeds = load_config(run_config(root, "text-seeds", "text-classification", models["bert"], data["text"], "full"))
    made["text-seeds"] = run_seeds(seeds, 2).run_dir
    # a half-written run: its records cut off mid-write (training died while saving), and a corrupt one
    half = root / "half-written"
    half.mkdir()
    (half / "config.yaml").write_text((made["text-bert-full"] / "config.yaml").read_text())
    (half / "metrics.json").write_text('{"test": {"accuracy": 0.9')
    broken = root / "broken"
    broken.mkdir()
    (broken / "config.yaml").write_text("task: [unclosed\n  model: {")
    made["half-written"], made["broken"] = half, broken
    (root / "notes.json").write_text(json.dumps({"not": "a run"}))
    made["study"] = write_study(root / "study")
    return made


def write_study(folder: Path) -> Path:
    """A `hftl tune` study folder's record (`study.json`) of five trials over two hyperparameters, without the
    trials' run folders: what the Tune page reads."""
    distributions = {
        "training.learning_rate": {"name": "FloatDistribution",
                                   "attributes": {"step": None, "low": 1e-5, "high": 1e-2, "log": True}},
        "model.lora.r": {"name": "IntDistribution", "attributes": {"step": 1, "low": 4, "high": 16, "log": False}},
    }
    trials = []
    for number, (rate, rank, value, state) in enumerate([(1e-4, 8, 0.61, "COMPLETE"), (1e-3, 16, 0.74, "COMPLETE"),
                                                         (3e-3, 4, 0.70, "COMPLETE"), (1e-5, 8, 0.41, "PRUNED"),
                                                         (5e-4, 12, None, "RUNNING")]):
        trials.append({"number": number, "state": state, "value": value,
                       "params": {"training.learning_rate": rate, "model.lora.r": rank},
                       "distributions": distributions, "intermediate_values": {"1": value or 0.5},
                       "started": None, "completed": None, "user_attrs": {}})
    folder.mkdir(parents=True)
    (folder / "study.json").write_text(json.dumps({
        "study": "study", "storage": "optuna-journal.log", "config": "tune.yaml",
        "objective": {"metric": "f1", "direction": "maximize", "at": "the trial's best evaluation"},
        "pruner": "median", "sampler": "TPE", "trials": trials, "selection": None}))
    (folder / "README.md").write_text("# Study `study`\n\nFive trials.\n")
    return folder
