"""Prediction throughput: transformers' pipeline(), hftl's old fixed-batch loop, the evaluation inside training,
hftl's streaming token-budget path (float32 and bf16; the last layer at [CLS] only, and float32 with every
position) and ONNX Runtime, on the same model and texts.

    .venv/bin/python benchmarks/predict_speed.py                       # packaged MiniLM, SST-2 dev+test
    .venv/bin/python benchmarks/predict_speed.py --n 2000 --repeats 3  # a random 2,000 of them
    .venv/bin/python benchmarks/predict_speed.py --model RUN_OR_MODEL_DIR --methods pipeline hftl-fp32 onnx
    .venv/bin/python benchmarks/predict_speed.py --methods hftl-fp32 hftl-bf16 --token-budget 1024 2048 8192
    .venv/bin/python benchmarks/predict_speed.py --data ../shared/datasets/goemotions --text-column text

The model is `--model` with a sequence-classification head; a checkpoint without one (the packaged MiniLM
is a sentence encoder) gets a randomly initialised 2-label head: fine for throughput, and every method
runs the same weights, so labels and probabilities are still compared exactly. Texts: the `sentence`
column of ../shared/datasets/sst2/{dev,test}.tsv (or /work/shared/datasets/sst2, or --data), else synthetic
ones. Several --token-budget values compare budgets side by side (one hftl-fp32@BUDGET etc. per value).

Methods run interleaved (A B C A B C ...), each after one untimed warm-up pass over 64 texts; the figure
is the median of `--repeats` passes, tokenisation included. Each method's labels are compared with
pipeline()'s (float32, the reference) and its largest probability difference is printed.
"""

from __future__ import annotations

import argparse
import csv
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(HERE)]

METHODS = ("pipeline", "old-loop", "trainer-eval", "trainer-eval-fp32", "hftl-fp32", "hftl-fp32-all-positions",
           "hftl-bf16", "onnx")
BUDGETED = ("hftl-fp32", "hftl-fp32-all-positions", "hftl-bf16", "onnx")  # methods that batch by token budget
SST2 = [REPO.parent / "shared" / "datasets" / "sst2", Path("/work/shared/datasets/sst2")]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="packaged:all-MiniLM-L6-v2", help="a packaged: name or a model folder")
    parser.add_argument("--data", type=Path, default=None,
                        help="a folder with dev.tsv and test.tsv (a `sentence` column); default: SST-2 in ../shared")
    parser.add_argument("--text-column", default="sentence", help="the column of --data's files to predict")
    parser.add_argument("--n", type=int, default=0, help="texts to predict (a seeded random sample; 0: all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--pipeline-batch-size", type=int, default=64)
    parser.add_argument("--old-batch-size", type=int, default=32, help="`hftl predict --batch-size` default")
    parser.add_argument("--eval-batch-size", type=int, default=128, help="evaluation batch inside training")
    parser.add_argument("--token-budget", type=int, nargs="+", default=None,
                        help="default: hftl's DEFAULT_TOKEN_BUDGET; several values run hftl-* and onnx once per budget "
                             "(as METHOD@BUDGET), interleaved with the others")
    parser.add_argument("--chunk-size", type=int, default=None, help="default: hftl's DEFAULT_CHUNK_SIZE")
    parser.add_argument("--threads", type=int, default=None, help="torch and ONNX Runtime threads (default: torch's)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def load_texts(n: int, seed: int, data: Path | None = None, column: str = "sentence") -> tuple[list[str], str]:
    for folder in [data] if data else SST2:
        if (folder / "dev.tsv").is_file():
            texts = []
            for name in ("dev.tsv", "test.tsv"):
                with (folder / name).open(encoding="utf-8", newline="") as handle:
                    texts += [row[column] for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)]
            source = f"dev+test ({folder})"
            break
    else:
        rng = random.Random(seed)
        words = "the a film movie plot was is really not very good bad boring great acting story of and".split()
        texts = [" ".join(rng.choices(words, k=rng.randint(2, 50))) for _ in range(n or 5000)]
        source = "synthetic (no SST-2 folder found)"
    if n and n < len(texts):
        texts = random.Random(seed).sample(texts, n)
    return texts, source


def cpu_description() -> dict:
    flags = set()
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
    return {"model": model, "flags": " ".join(f for f in wanted if f in flags) or "(none of the AVX-512/AMX flags)"}


def build_model(name: str, workdir: Path):
    """(model folder, model, tokenizer): a sequence classifier saved in `workdir` (random head if it had none)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from run import resolve_model

    source = resolve_model(name)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=2).eval()
    tokenizer = AutoTokenizer.from_pretrained(source)
    folder = workdir / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, model, tokenizer


def make_runners(args, folder: Path, model, tokenizer, workdir: Path) -> dict:
    """method -> function(texts) -> (n, num_labels) probabilities in input order."""
    import numpy as np
    import torch

    from hftl import batch_inference
    from hftl.trainer import bf16_is_fast

    budgets = args.token_budget or [batch_inference.DEFAULT_TOKEN_BUDGET]
    chunk_size = args.chunk_size or batch_inference.DEFAULT_CHUNK_SIZE
    runners = {}

    def pipeline_runner():
        from transformers import pipeline

        classify = pipeline("text-classification", model=model, tokenizer=tokenizer, device="cpu",
                            batch_size=args.pipeline_batch_size, top_k=None, truncation=True, max_length=args.max_length)
        label_ids = model.config.label2id

        def run(texts):
            probs = np.zeros((len(texts), len(label_ids)), dtype=np.float32)
            for i, scores in enumerate(classify(texts)):
                for item in scores:
                    probs[i, label_ids[item["label"]]] = item["score"]
            return probs

        return run

    def old_loop(texts):
        # hftl's prediction path before this change: fixed-size batches in input order, padded per batch
        results = []
        for start in range(0, len(texts), args.old_batch_size):
            batch = tokenizer(texts[start:start + args.old_batch_size], truncation=True, max_length=args.max_length,
                              padding=True, return_tensors="pt")
            with torch.inference_mode():
                results.append(model(**batch).logits.float().softmax(-1).numpy())
        return np.concatenate(results)

    def trainer_runner(bf16: bool):
        from datasets import Dataset
        from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, TrainingArguments

        from hftl.trainer import trainer_class

        targs = TrainingArguments(output_dir=str(workdir / "trainer"), report_to="none", bf16=bf16, use_cpu=True,
                                  per_device_eval_batch_size=args.eval_batch_size, disable_tqdm=True)
        # A copy: with bf16 on, accelerate's prepare_model wraps the model's forward in autocast *in place*
        # (accelerate 1.x), which would turn every other method's float32 run into a bf16 one.
        copy = AutoModelForSequenceClassification.from_pretrained(folder).eval()
        trainer = trainer_class()(model=copy, args=targs, data_collator=DataCollatorWithPadding(tokenizer))
        trainer.sort_eval_by_length = True  # as build_trainer sets it (speed.sort_eval_by_length)

        def run(texts):
            dataset = Dataset.from_dict(dict(tokenizer(texts, truncation=True, max_length=args.max_length)))
            return torch.from_numpy(trainer.predict(dataset).predictions).float().softmax(-1).numpy()

        return run

    def hftl_runner(bf16, budget, first_token_last_layer=True):
        def run(texts):
            return np.concatenate([p for _, p in batch_inference.uncalibrated_probabilities(
                model, tokenizer, texts, max_length=args.max_length, bf16=bf16, progress=False, token_budget=budget,
                chunk_size=chunk_size, first_token_last_layer=first_token_last_layer)])

        return run

    onnx_classifier = []  # exported once, shared by every budget

    def onnx_runner(budget):
        from hftl.onnx_export import OnnxClassifier, export_onnx

        if not onnx_classifier:
            started = time.perf_counter()
            out = export_onnx(folder, workdir / "onnx")
            print(f"ONNX export: {time.perf_counter() - started:.1f} s", file=sys.stderr)
            onnx_classifier.append(OnnxClassifier(out, threads=args.threads))

        def run(texts):
            return np.concatenate([p for _, p in onnx_classifier[0].uncalibrated_probabilities(
                texts, max_length=args.max_length, progress=False, token_budget=budget, chunk_size=chunk_size)])

        return run

    factories = {"pipeline": pipeline_runner, "old-loop": lambda: old_loop,
                 "trainer-eval": lambda: trainer_runner(bf16_is_fast()), "trainer-eval-fp32": lambda: trainer_runner(False),
                 "hftl-fp32": lambda budget: hftl_runner(False, budget),
                 "hftl-fp32-all-positions": lambda budget: hftl_runner(False, budget, first_token_last_layer=False),
                 "hftl-bf16": lambda budget: hftl_runner(True, budget), "onnx": onnx_runner}
    for method in args.methods:
        if method in BUDGETED:
            for budget in budgets:
                runners[f"{method}@{budget}" if len(budgets) > 1 else method] = factories[method](budget)
        else:
            runners[method] = factories[method]()
    return runners


def main(argv=None) -> int:
    import logging

    import numpy as np
    import torch
    import transformers

    from hftl.trainer import bf16_is_fast

    logging.basicConfig(level=logging.WARNING)
    transformers.logging.set_verbosity_error()
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    texts, source = load_texts(args.n, args.seed, args.data, args.text_column)
    if "hftl-bf16" in args.methods and not bf16_is_fast():
        print("hftl-bf16 skipped: bf16 is not fast on this machine (hftl.trainer.bf16_is_fast)", file=sys.stderr)
        args.methods.remove("hftl-bf16")
    cpu = cpu_description()
    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    try:
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    print(f"CPU: {cpu['model']}; flags: {cpu['flags']}; torch threads: {torch.get_num_threads()}")
    print(f"versions: {', '.join(f'{k} {v}' for k, v in versions.items())}; bf16_is_fast: {bf16_is_fast()}")
    lengths = [len(ids) for ids in transformers.AutoTokenizer.from_pretrained(
        __import__("run").resolve_model(args.model))(texts, truncation=True, max_length=args.max_length)["input_ids"]]
    print(f"texts: {len(texts)} from {source}; tokens per text: median {statistics.median(lengths):.0f}, "
          f"max {max(lengths)}; model: {args.model} (random 2-label head if it had none)")
    with tempfile.TemporaryDirectory() as tmp:
        folder, model, tokenizer = build_model(args.model, Path(tmp))
        runners = make_runners(args, folder, model, tokenizer, Path(tmp))
        for run in runners.values():
            run(texts[:64])  # warm-up: first-call costs (kernel selection, allocations) are not throughput
        times = {method: [] for method in runners}
        outputs = {}
        for repeat in range(args.repeats):
            for method, run in runners.items():
                started = time.perf_counter()
                outputs[method] = run(texts)
                times[method].append(time.perf_counter() - started)
                print(f"  repeat {repeat + 1} {method}: {len(texts) / times[method][-1]:.1f} texts/s", file=sys.stderr)
    reference = outputs.get("pipeline", outputs[next(iter(outputs))])
    rates = {method: len(texts) / statistics.median(seconds) for method, seconds in times.items()}
    base = rates.get("pipeline")
    print(f"\n{'method':<18}{'texts/s':>10}{'x pipeline':>12}{'labels = ref':>16}{'max |dp|':>12}")
    for method, rate in rates.items():
        same = int((outputs[method].argmax(-1) == reference.argmax(-1)).sum())
        diff = float(np.abs(outputs[method] - reference).max())
        ratio = f"{rate / base:.2f}" if base else "-"
        print(f"{method:<18}{rate:>10.1f}{ratio:>12}{f'{same}/{len(texts)}':>16}{diff:>12.1e}")
    print("reference: pipeline() (float32); hftl-bf16 and trainer-eval run under bf16 autocast when bf16_is_fast "
          "(trainer-eval as training evaluates), trainer-eval-fp32 never; hftl-* compute the last layer at [CLS] "
          "only where the architecture allows, except hftl-fp32-all-positions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
