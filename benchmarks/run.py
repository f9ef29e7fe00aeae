"""hftl's speed suite: `hftl train` with its defaults against plain `transformers.Trainer` scripts.

Every variant runs as its own process on the same model, data subset, seed, epochs, batch size and
learning rate; the variants are interleaved (A B C D A B C D ...) so that load from other work on the
machine spreads over all of them, and the table reports the median of the repeats (and the spread).

    .venv/bin/python benchmarks/run.py                       # SST-2 subset, 4 variants x 3 repeats
    .venv/bin/python benchmarks/run.py --variants baseline-best hftl "hftl[speed.fused_optimizer=false]"
    .venv/bin/python benchmarks/run.py --workload causal-lm --once baseline-padded   # SmolLM2-135M, packing
    .venv/bin/python benchmarks/run.py --workload image-classification   # a small random ViT on sklearn digits
    .venv/bin/python benchmarks/run.py --smoke --data DIR --model TINY_MODEL_DIR   # a few steps (CI)

Workloads (`--workload`; each one fixes its data, model, baselines, default sizes and test metrics):

  sst2-classification (default)  SST-2 text classification, packaged all-MiniLM-L6-v2. Baselines (benchmarks/
      baselines.py): baseline-padded, baseline-dynamic, baseline-best. Test accuracy and macro F1.
  causal-lm  causal-LM fine-tuning (task causal-lm, `model.strategy: full`) on the `sentence` column of SST-2:
      the first --train-rows of train.tsv, --validation-rows of dev.tsv, --test-rows of test.tsv; --max-length
      is the block size. Packaged SmolLM2-135M-Instruct (its GGUF file is de-quantised once into the workdir,
      and every variant loads that safetensors copy). Baselines (benchmarks/baselines_clm.py, as run_clm.py):
      baseline-padded (one padded sentence per example, fp32) and baseline-best (run_clm's group_texts packing,
      bf16 where fast). Training tokens/s count non-pad tokens; test loss and perplexity on packed test text.
      The hftl config sets `data.baseline: false`: the baselines do not evaluate before training either.
      baseline-padded trains ~10x the token positions of the others (SST-2 phrases are ~13 tokens): --once it.
  image-classification  a small randomly initialised ViT (32x32 input in 4x4 patches, hidden 192, 6 layers,
      3 heads, 2.7M parameters; a tiny one with --smoke), built in the workdir with seed 0 so every variant
      starts from the same weights (--model DIR to use another), on scikit-learn's digits, exported to image
      folders (stratified: 20% test, 10% of the rest validation). Baseline: baseline-best (benchmarks/
      baselines_image.py, as run_image_classification.py, bf16 where fast). Test accuracy and macro F1.
  preference-tuning  DPO with LoRA of packaged SmolLM2-135M-Instruct (de-quantised once, as for causal-lm) on
      the oasst1 pairs (--data: train.jsonl, test.jsonl): of the first --train-rows training pairs those that
      fit --max-length tokens as hftl renders them, the next --validation-rows that fit, and those of the first
      --test-rows test pairs. Baseline: baseline-trl (benchmarks/baselines_dpo.py, TRL's DPOTrainer as its docs
      write it). Test reward accuracy and margin.

Variants: the workload's baselines, hftl, and `hftl[key=value,...]`: hftl with `--set` overrides (e.g.
`hftl[model.strategy=lora]`). The text data folder holds train.tsv, dev.tsv (validation) and test.tsv with
`sentence` and `label` columns.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE)]  # benchmarks/machine.py, benchmarks/baselines.py

from machine import machine_info, machine_lines  # noqa: E402

DATASETS = REPO.parent / "shared" / "datasets"
BASELINES = ("baseline-padded", "baseline-dynamic", "baseline-best", "baseline-trl")
#: defaults of the size options, for every workload unless its own `defaults` say otherwise
COMMON_DEFAULTS = {"data": str(DATASETS / "sst2"), "train_rows": 2000, "validation_rows": 500, "test_rows": None, "max_length": 128, "epochs": 1.0,
                   "batch_size": 32, "lr": 5e-5, "repeats": 3, "max_steps": -1}
SMOKE = {"train_rows": 48, "validation_rows": 16, "test_rows": 16, "max_length": 32, "batch_size": 8,
         "repeats": 1, "max_steps": 2}
#: the columns of the printed table: (key in the summary, header, format); the workload's test metrics follow.
#: A column no variant has a value for (tokens for images) is left out.
COLUMNS = (
    ("wall_s", "wall s", "{:.1f}"),
    ("t_first_step", "1st step s", "{:.1f}"),
    ("train_s", "train s", "{:.1f}"),
    ("eval_s", "eval s", "{:.1f}"),
    ("train_samples_per_s", "samples/s", "{:.1f}"),
    ("nonpad_tokens_per_s", "tokens/s", "{:.0f}"),
    ("padding_fraction", "pad frac", "{:.2f}"),
    ("peak_rss_mb", "peak MB", "{:.0f}"),
)
CLASSIFICATION_METRICS = (("accuracy", "test acc", "{:.4f}"), ("f1", "test F1", "{:.4f}"))


# -- workloads: what each one fixes ------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """What differs between workloads; the rest (processes, probes, medians, table, JSON) is shared."""

    name: str
    task: str                                    # hftl's `task:`
    baseline_script: str                         # in benchmarks/
    baselines: dict                              # variant -> the script's --variant
    not_applicable: str                          # why the other baseline variants are refused
    defaults: dict                               # size defaults over COMMON_DEFAULTS (and "model")
    smoke: dict                                  # --smoke sizes over SMOKE
    metrics: tuple                               # test metrics (key, header, format); the first is the headline
    required_files: tuple                        # files --data must hold (empty: the workload makes its data)
    prepare_data: Callable                       # (args, workdir) -> {"files": {split: path}, "rows": {split: n}}
    prepare_model: Callable                      # (args, workdir) -> (hftl's model.name_or_path, the baselines' folder)
    hftl_sections: Callable                      # (args, files) -> {"model": {...}, "data": {...}} of the hftl config
    baseline_options: Callable = lambda args: []  # workload-specific options of the baseline script


def head_lines(source: Path, target: Path, rows: int | None) -> int:
    """Copy the header and the first `rows` data lines of a TSV byte for byte; returns the rows copied."""
    with source.open(encoding="utf-8") as src, target.open("w", encoding="utf-8") as dst:
        dst.write(src.readline())
        count = 0
        for line in src:
            if rows is not None and count >= rows:
                break
            dst.write(line)
            count += 1
    return count


def prepare_sst2(args, workdir: Path) -> dict:
    """The first N rows of train.tsv, dev.tsv (validation) and test.tsv, copied into the workdir."""
    data = Path(args.data)
    names = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
    rows = {"train": args.train_rows, "validation": args.validation_rows, "test": args.test_rows}
    files, counts = {}, {}
    for split, name in names.items():
        files[split] = workdir / "data" / name
        files[split].parent.mkdir(parents=True, exist_ok=True)
        counts[split] = head_lines(data / name, files[split], rows[split])
    return {"files": files, "rows": counts}


def prepare_pairs(args, workdir: Path) -> dict:
    """Preference pairs that fit `--max-length` tokens as hftl renders them (so that hftl drops none and the TRL
    baseline truncates none: both train on the same pairs): of the first `--train-rows` of train.jsonl (train), the
    next `--validation-rows` kept (validation), and the first `--test-rows` of test.jsonl; written as JSONL."""
    from hftl.data.conversations import read_pairs
    from hftl.tasks.preference_tuning import PreferenceTuningRecipe

    data = Path(args.data)
    recipe = PreferenceTuningRecipe({"task": "preference-tuning", "model": {"name_or_path": args.model},
                                     "data": {"train": str(data / "train.jsonl"), "max_length": args.max_length}})
    tokenizer = recipe.load_processor()
    train_and_validation = read_pairs(str(data / "train.jsonl"), recipe.config.data, "train")
    wanted = {"train": (train_and_validation[:args.train_rows], None),
              "validation": (train_and_validation[args.train_rows:], args.validation_rows),
              "test": (read_pairs(str(data / "test.jsonl"), recipe.config.data, "test")[:args.test_rows], None)}
    files, counts = {}, {}
    for split, (pairs, limit) in wanted.items():
        kept = recipe.encode_pairs(pairs, tokenizer, split)[0][:limit]
        files[split] = workdir / "data" / f"{split}.jsonl"
        files[split].parent.mkdir(parents=True, exist_ok=True)
        files[split].write_text("".join(json.dumps({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected})
                                        + "\n" for p in kept), encoding="utf-8")
        counts[split] = len(kept)
    return {"files": files, "rows": counts}


def prepare_digits(args, workdir: Path) -> dict:
    """scikit-learn's digits as image folders `<split>/<digit>/<n>.png` (8x8 grayscale, 0..16 scaled to 0..255,
    as recipes/data/export_digits.py writes them): 20% test, 10% of the rest validation, stratified with --seed;
    --train-rows / --validation-rows / --test-rows take a stratified subset of each."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    target = digits.target
    rest, test = train_test_split(np.arange(len(images)), test_size=0.2, random_state=args.seed, stratify=target)
    train, validation = train_test_split(rest, test_size=0.1, random_state=args.seed, stratify=target[rest])

    def subset(indices, rows):
        if rows is None or rows >= len(indices):
            return indices
        stratify = target[indices] if rows >= len(set(target[indices])) else None
        return train_test_split(indices, train_size=rows, random_state=args.seed, stratify=stratify)[0]

    files, counts = {}, {}
    for split, indices, rows in (("train", train, args.train_rows), ("validation", validation, args.validation_rows),
                                 ("test", test, args.test_rows)):
        files[split] = workdir / "data" / "digits" / split
        chosen = subset(indices, rows)
        for i in chosen:
            folder = files[split] / str(target[i])
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i], mode="L").save(folder / f"{i:04d}.png")
        counts[split] = len(chosen)
    return {"files": files, "rows": counts}


def resolve_model(name: str) -> str:
    """A folder the baselines can load (they know nothing of hftl's `packaged:` names)."""
    if name.startswith("packaged:"):
        from hftl.config.schema import ModelConfig
        from hftl.modeling import resolve_checkpoint

        return resolve_checkpoint(ModelConfig(name_or_path=name))[0]
    return name


def packaged_model(args, workdir: Path) -> tuple[str, str]:
    """hftl takes the `packaged:` name, the baselines its folder."""
    return args.model, resolve_model(args.model)


def dense_causal_lm(args, workdir: Path) -> tuple[str, str]:
    """A GGUF checkpoint (packaged SmolLM2) is de-quantised once into a safetensors folder that every variant loads:
    the de-quantisation (~15 s) is not what is measured, and a plain script cannot train a GGUF-loaded model."""
    from hftl.config.schema import ModelConfig
    from hftl.modeling import load_kwargs, resolve_checkpoint

    config = ModelConfig(name_or_path=args.model)
    path, gguf_file = resolve_checkpoint(config)
    if not gguf_file:
        return args.model, path
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hftl.modeling import load_pretrained_model

    out = workdir / "model"
    model, _ = load_pretrained_model(AutoModelForCausalLM, config)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(path, **load_kwargs(config)).save_pretrained(out)
    print(f"{args.model}: de-quantised {gguf_file} into {out}", flush=True)
    return str(out), str(out)


def random_vit(args, workdir: Path) -> tuple[str, str]:
    """--model DIR, else a randomly initialised ViT (seed 0; tiny with --smoke) with its PIL image processor."""
    if args.model:
        return args.model, args.model
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

    size = dict(image_size=16, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2) if args.smoke \
        else dict(image_size=32, patch_size=4, hidden_size=192, num_hidden_layers=6, num_attention_heads=3)
    out = workdir / "model"
    torch.manual_seed(0)
    config = ViTConfig(**size, intermediate_size=4 * size["hidden_size"], num_labels=10)
    ViTForImageClassification(config).save_pretrained(out)
    side = size["image_size"]
    processor = ViTImageProcessorPil(size={"height": side, "width": side}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor.save_pretrained(out)
    return str(out), str(out)


WORKLOADS = {
    "sst2-classification": Workload(
        name="sst2-classification",
        task="text-classification",
        baseline_script="baselines.py",
        baselines={"baseline-padded": "padded", "baseline-dynamic": "dynamic", "baseline-best": "best"},
        not_applicable="",
        defaults={"model": "packaged:all-MiniLM-L6-v2"},
        smoke={},
        metrics=CLASSIFICATION_METRICS,
        required_files=("train.tsv", "dev.tsv", "test.tsv"),
        prepare_data=prepare_sst2,
        prepare_model=packaged_model,
        hftl_sections=lambda args, files: {"data": {
            "train": str(files["train"]), "validation": str(files["validation"]), "test": str(files["test"]),
            "text_column": "sentence", "label_column": "label", "max_length": args.max_length}},
        baseline_options=lambda args: ["--max-length", str(args.max_length)],
    ),
    "causal-lm": Workload(
        name="causal-lm",
        task="causal-lm",
        baseline_script="baselines_clm.py",
        baselines={"baseline-padded": "padded", "baseline-best": "best"},
        not_applicable="it compares one padded sentence per example with packing: baseline-padded, baseline-best",
        defaults={"model": "packaged:SmolLM2-135M-Instruct", "train_rows": 400, "validation_rows": 100,
                  "test_rows": 200, "max_length": 128, "batch_size": 4},
        smoke={"batch_size": 4},
        metrics=(("perplexity", "test ppl", "{:.2f}"), ("loss", "test loss", "{:.4f}")),
        required_files=("train.tsv", "dev.tsv", "test.tsv"),
        prepare_data=prepare_sst2,
        prepare_model=dense_causal_lm,
        hftl_sections=lambda args, files: {
            "model": {"strategy": "full"},  # the baselines fine-tune every weight
            "data": {"train": str(files["train"]), "validation": str(files["validation"]), "test": str(files["test"]),
                     "text_column": "sentence", "block_size": args.max_length,
                     "baseline": False}},  # no evaluation before training: the baselines do none
        baseline_options=lambda args: ["--block-size", str(args.max_length)],
    ),
    "image-classification": Workload(
        name="image-classification",
        task="image-classification",
        baseline_script="baselines_image.py",
        baselines={"baseline-best": "best"},
        not_applicable="images all have one size, so there is no padding to vary: use baseline-best",
        defaults={"model": None, "train_rows": None, "validation_rows": None, "max_length": None, "epochs": 3.0,
                  "lr": 5e-4},
        smoke={"max_length": None},
        metrics=CLASSIFICATION_METRICS,
        required_files=(),
        prepare_data=prepare_digits,
        prepare_model=random_vit,
        hftl_sections=lambda args, files: {
            "model": {"strategy": "full"},
            "data": {"train": str(files["train"]), "validation": str(files["validation"]), "test": str(files["test"])}},
    ),
    "preference-tuning": Workload(
        name="preference-tuning",
        task="preference-tuning",
        baseline_script="baselines_dpo.py",
        baselines={"baseline-trl": "plain"},
        not_applicable="its baseline is TRL's DPOTrainer as its docs write it: baseline-trl",
        defaults={"data": str(DATASETS / "preference"), "model": "packaged:SmolLM2-135M-Instruct",
                  "train_rows": 300, "validation_rows": 16, "test_rows": 64, "max_length": 512, "batch_size": 8,
                  "lr": 5e-4, "repeats": 1},
        smoke={"train_rows": 24, "validation_rows": 4, "test_rows": 4, "max_length": 512, "batch_size": 4},
        metrics=(("reward_accuracy", "test reward acc", "{:.3f}"), ("reward_margin", "test margin", "{:.3f}")),
        required_files=("train.jsonl", "test.jsonl"),
        prepare_data=prepare_pairs,
        prepare_model=dense_causal_lm,
        hftl_sections=lambda args, files: {
            "model": {"strategy": "lora", "lora": {"r": 16, "alpha": 32, "dropout": 0.0}},
            "data": {"train": str(files["train"]), "validation": str(files["validation"]), "test": str(files["test"]),
                     "max_length": args.max_length,
                     "baseline": False}},  # no evaluation before training: the baseline does none
        baseline_options=lambda args: ["--max-length", str(args.max_length)],
    ),
}
DEFAULT_WORKLOAD = "sst2-classification"


def workload_help() -> str:
    """The epilog of --help: each workload's variants and default sizes."""
    shown = {"model": "model", "train_rows": "train rows", "validation_rows": "validation rows",
             "test_rows": "test rows", "max_length": "max length", "epochs": "epochs", "batch_size": "batch",
             "lr": "lr"}
    lines = ["defaults by workload:"]
    for workload in WORKLOADS.values():
        values = {**COMMON_DEFAULTS, **workload.defaults}
        described = []
        for key, title in shown.items():
            value = values.get(key)
            if key == "model" and value is None:
                value = "a random ViT made in the workdir"
            elif key.endswith("_rows") and value is None:
                value = "all"
            if value is not None:
                described.append(f"{title} {value}")
        smoke = ", ".join(f"{k} {v}" for k, v in workload.smoke.items() if v is not None)
        lines.append(f"  {workload.name}: variants {' '.join(default_variants(workload))}; {', '.join(described)}"
                     + (f" (--smoke: {smoke})" if smoke else ""))
    return "\n".join(lines)


def default_variants(workload: Workload) -> list[str]:
    return [*workload.baselines, "hftl"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, epilog=workload_help(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    unset = argparse.SUPPRESS  # size options left out take the workload's default (then --smoke's)
    parser.add_argument("--workload", choices=list(WORKLOADS), default=DEFAULT_WORKLOAD,
                        help="what to train and measure (see above)")
    parser.add_argument("--data", default=unset,
                        help="folder with train.tsv, dev.tsv, test.tsv (text workloads), or train.jsonl and test.jsonl "
                             "(preference-tuning); default: the workload's folder in ../shared/datasets "
                             "(image-classification makes its own data)")
    parser.add_argument("--model", default=unset,
                        help="a checkpoint folder or packaged:NAME (default: the workload's; image-classification: "
                             "a random ViT made in the workdir)")
    parser.add_argument("--variants", nargs="+", default=None, help="default: the workload's baselines and hftl")
    parser.add_argument("--train-rows", type=int, default=unset, help="first N training rows (images: a stratified N)")
    parser.add_argument("--validation-rows", type=int, default=unset,
                        help="first N rows of dev.tsv / N validation images")
    parser.add_argument("--test-rows", type=int, default=unset, help="first N rows of test.tsv / N test images")
    parser.add_argument("--max-length", type=int, default=unset, help="tokens per example (causal-lm: the block size)")
    parser.add_argument("--epochs", type=float, default=unset)
    parser.add_argument("--batch-size", type=int, default=unset)
    parser.add_argument("--lr", type=float, default=unset)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeats", type=int, default=unset,
                        help="runs of each variant (the table shows medians; default 3)")
    parser.add_argument("--max-steps", type=int, default=unset, help="stop training after N steps")
    parser.add_argument("--once", nargs="*", default=[], metavar="VARIANT",
                        help="variants run in the first round only (slow ones whose ratio is far from 1)")
    parser.add_argument("--threads", type=int, default=None,
                        help="OMP_NUM_THREADS for every variant (default: unset, torch uses all cores)")
    parser.add_argument("--no-startup", action="store_true", help="skip timing `hftl --help`")
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one, removed)")
    parser.add_argument("--out", default=None, help="results JSON (default: benchmarks/results/<time>.json)")
    parser.add_argument("--smoke", action="store_true", help=f"a few steps on tiny data: {SMOKE}")
    args = parser.parse_args(argv)
    workload = WORKLOADS[args.workload]
    smoke = {**SMOKE, **workload.smoke} if args.smoke else {}
    for key, value in {**COMMON_DEFAULTS, **workload.defaults, **smoke}.items():
        if not hasattr(args, key):  # given on the command line: kept
            setattr(args, key, value)
    if args.variants is None:
        args.variants = default_variants(workload)
    for name in args.variants:
        parse_variant(name, workload)  # fail on a typo before running anything
    unknown = set(args.once) - set(args.variants)
    if unknown:
        parser.error(f"--once names variants not in --variants: {', '.join(sorted(unknown))}")
    return args


def parse_variant(name: str, workload: Workload) -> tuple[str, list[str]]:
    """('hftl', ['speed.bf16=false']) for 'hftl[speed.bf16=false]'; (name, []) for the baselines."""
    match = re.fullmatch(r"hftl(?:\[(.*)\])?", name)
    if match:
        return "hftl", [o.strip() for o in (match.group(1) or "").split(",") if o.strip()]
    if name in workload.baselines:
        return name, []
    if name in BASELINES:
        raise SystemExit(f"variant '{name}' does not apply to the {workload.name} workload: {workload.not_applicable}.")
    raise SystemExit(f"unknown variant '{name}': use one of {', '.join(default_variants(workload))} "
                     "or hftl[key=value,...]")


# -- running the variants ----------------------------------------------------------------------------------


def hftl_config(workload: Workload, args, data: dict, model: str, output_dir: Path) -> dict:
    """The run config a user writes for this workload: only what the workload fixes, hftl's defaults otherwise."""
    training = {"output_dir": str(output_dir), "num_train_epochs": args.epochs, "learning_rate": args.lr,
                "per_device_train_batch_size": args.batch_size, "seed": args.seed}
    if args.max_steps > 0:
        training["max_steps"] = args.max_steps
    sections = workload.hftl_sections(args, data["files"])
    return {
        "task": workload.task,
        "model": {"name_or_path": model, **sections.get("model", {})},
        "data": sections["data"],
        "training": training,
        "overwrite": True,
    }


def command_for(variant: str, workload: Workload, args, data: dict, models: tuple[str, str],
                run_dir: Path) -> tuple[list[str], Path]:
    """(argv after `probe.py OUT --`, file holding the test metrics)."""
    kind, overrides = parse_variant(variant, workload)
    hftl_model, baseline_model = models
    if kind == "hftl":
        import yaml

        config = run_dir / "config.yaml"
        config.write_text(yaml.safe_dump(hftl_config(workload, args, data, hftl_model, run_dir / "out")),
                          encoding="utf-8")
        argv = ["hftl", "train", str(config)]  # the probe runs the console script's entry point
        for override in overrides:
            argv += ["--set", override]
        return argv, run_dir / "out" / "metrics.json"
    results = run_dir / "results.json"
    files = data["files"]
    argv = [str(HERE / workload.baseline_script), "--variant", workload.baselines[kind], "--model", baseline_model,
            "--train", str(files["train"]), "--validation", str(files["validation"]), "--test", str(files["test"]),
            *workload.baseline_options(args), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
            "--lr", str(args.lr), "--seed", str(args.seed), "--max-steps", str(args.max_steps),
            "--output-dir", str(run_dir / "out"), "--results", str(results)]
    return argv, results


def run_once(variant: str, workload: Workload, args, data: dict, models: tuple[str, str], run_dir: Path,
             env: dict) -> dict:
    """One process: wall time and peak RSS from the OS, the rest from the probe and the metrics file."""
    run_dir.mkdir(parents=True, exist_ok=True)
    argv, metrics_file = command_for(variant, workload, args, data, models, run_dir)
    probe_file = run_dir / "probe.json"
    command = [sys.executable, str(HERE / "probe.py"), str(probe_file), "--", *argv]
    log = run_dir / "log.txt"
    start = time.time()
    with log.open("w", encoding="utf-8") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, cwd=str(run_dir),
                                   env={**env, "BENCH_T0": repr(start)})
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.time() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"{variant} failed (exit {process.returncode}); log {log}:\n{tail}")
    probe = json.loads(probe_file.read_text(encoding="utf-8"))
    metrics = json.loads(metrics_file.read_text(encoding="utf-8"))["test"]
    rss_kb = usage.ru_maxrss  # kilobytes on Linux
    tokens, nonpad, train_s = probe["train_tokens"], probe["train_nonpad_tokens"], probe["train_s"]
    return {
        "wall_s": wall,
        "t_first_step": probe["t_first_step"],
        "train_s": train_s,
        "eval_s": probe["eval_s"],
        "train_steps": probe["train_steps"],
        "train_samples": probe["train_samples"],
        "train_samples_per_s": probe["train_samples"] / train_s if train_s else None,
        "nonpad_tokens_per_s": nonpad / train_s if train_s and tokens else None,
        "padding_fraction": 1 - nonpad / tokens if tokens else None,
        "peak_rss_mb": rss_kb / 1024,
        **{key: metrics.get(key) for key in dict.fromkeys([*(k for k, _, _ in workload.metrics), "loss"])},
    }


def time_startup(env: dict, repeats: int = 5) -> dict:
    """Wall seconds of `hftl --help` (a fresh interpreter each time): median and all runs."""
    hftl = Path(sys.executable).with_name("hftl")
    command = [str(hftl) if hftl.exists() else "hftl", "--help"]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return {"command": "hftl --help", "median_s": statistics.median(times), "runs_s": times}


def summarise(runs: list[dict]) -> dict:
    summary = {}
    for key in runs[0]:
        values = [r[key] for r in runs if r[key] is not None]
        if values:
            summary[key] = statistics.median(values)
            if len(values) > 1 and key in ("wall_s", "train_s", "eval_s", "t_first_step"):
                summary[f"{key}_range"] = [min(values), max(values)]
    return summary


def ratios(summaries: dict, workload: Workload) -> dict:
    """For each hftl variant and each baseline: baseline wall / hftl wall (speed-up), the same for training, and
    hftl's test metrics minus the baseline's (`accuracy_delta`, `perplexity_delta`...: those both have)."""
    out = {}
    for name, summary in summaries.items():
        if parse_variant(name, workload)[0] != "hftl":
            continue
        for base in workload.baselines:
            if base in summaries:
                b = summaries[base]
                out[f"{name} vs {base}"] = {
                    "speedup_wall": b["wall_s"] / summary["wall_s"],
                    "speedup_train": b["train_s"] / summary["train_s"] if summary.get("train_s") else None,
                    "time_ratio_wall": summary["wall_s"] / b["wall_s"],
                    **{f"{key}_delta": summary[key] - b[key] for key, _, _ in workload.metrics
                       if summary.get(key) is not None and b.get(key) is not None},
                }
    return out


def format_table(summaries: dict, columns=COLUMNS) -> str:
    """One row per variant; columns no variant has a value for are left out."""
    columns = [c for c in columns if any(s.get(c[0]) is not None for s in summaries.values())]
    header = ["variant"] + [title for _, title, _ in columns]
    rows = [header]
    for name, summary in summaries.items():
        rows.append([name] + [fmt.format(summary[key]) if summary.get(key) is not None else "-"
                              for key, _, fmt in columns])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def bf16_phrase() -> str:
    """Whether bf16 was on: per variant, so say what each kind of variant does on this machine."""
    from baselines import bf16_available

    state = "on" if bf16_available() else "off (no fast bf16 here)"
    return (f"{state} where a variant enables it (hftl's speed.bf16 auto, baseline-best); baseline-padded / "
            "baseline-dynamic run fp32; a speed.bf16 override in a variant's name wins")


def main(argv=None) -> int:
    args = parse_args(argv)
    workload = WORKLOADS[args.workload]
    data_dir = Path(args.data)
    missing = [n for n in workload.required_files if not (data_dir / n).is_file()]
    if missing:
        print(f"benchmark skipped: {data_dir} lacks {', '.join(missing)} (give --data FOLDER with "
              f"{', '.join(workload.required_files)}).")
        return 0
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="hftl-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    # A fresh datasets cache: the first round pays parsing and tokenising, later rounds hit the cache
    # (as a user's re-runs do). Every variant gets the same treatment.
    env = {**os.environ, "HF_DATASETS_CACHE": str(workdir / "hf_datasets_cache"), "HF_HUB_OFFLINE": "1",
           **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}),
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    data = workload.prepare_data(args, workdir)
    models = workload.prepare_model(args, workdir)
    started = datetime.now(timezone.utc)
    headline, headline_title, headline_fmt = workload.metrics[0]
    print(f"workload {workload.name}; workdir {workdir}; rows {data['rows']}; variants {args.variants}; "
          f"repeats {args.repeats}", flush=True)

    runs = {name: [] for name in args.variants}
    for repeat in range(args.repeats):
        for index, name in enumerate(args.variants):
            if repeat and name in args.once:
                continue
            run_dir = workdir / "runs" / f"{repeat}-{index}"
            result = run_once(name, workload, args, data, models, run_dir, env)
            runs[name].append(result)
            print(f"[{repeat + 1}/{args.repeats}] {name}: wall {result['wall_s']:.1f} s, train {result['train_s']:.1f} s, "
                  f"{headline_title} {headline_fmt.format(result[headline])}", flush=True)
            shutil.rmtree(run_dir / "out", ignore_errors=True)  # checkpoints: a few hundred MB each

    summaries = {name: summarise(results) for name, results in runs.items()}
    report = {
        "date": started.isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]) if argv is None else f"run.py {' '.join(argv)}",
        "machine": machine_info(),
        "workload": {"name": workload.name, "model": args.model,
                     "model_dirs": {"hftl": models[0], "baselines": models[1]},
                     "data": str(data_dir) if workload.required_files else "sklearn.datasets.load_digits",
                     "rows": data["rows"], "max_length": args.max_length,
                     "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
                     "max_steps": args.max_steps, "repeats": args.repeats, "once": args.once,
                     "threads": args.threads},
        "summary": summaries,
        "ratios": ratios(summaries, workload),
        "runs": runs,
        "total_s": (datetime.now(timezone.utc) - started).total_seconds(),
    }
    if not args.no_startup:
        report["startup"] = time_startup(env, repeats=1 if args.smoke else 5)

    print()
    print("\n".join(machine_lines(bf16_phrase(), report["machine"])))
    print(f"variant processes: OMP_NUM_THREADS={args.threads or 'unset (torch default threads)'}")
    print(format_table(summaries, (*COLUMNS, *workload.metrics)))
    for pair, ratio in report["ratios"].items():
        delta = ratio.get(f"{headline}_delta")
        print(f"{pair}: {ratio['speedup_wall']:.2f}x faster end to end (train {ratio['speedup_train']:.2f}x), "
              + (f"{headline_title} {delta:+.4f}" if delta is not None else f"no {headline_title} to compare"))
    if "startup" in report:
        print(f"hftl --help: {report['startup']['median_s']:.2f} s (median of {len(report['startup']['runs_s'])})")
    out = Path(args.out) if args.out else HERE / "results" / f"{started:%Y%m%dT%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"results: {out}")
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
