"""SST-2 two ways on one decoder, side by side in one process: a classification head (`task: text-classification`)
against instruction tuning (`task: instruction-tuning`, the answer generated and parsed), on the same 872 test
sentences (docs/results.md, issue 25).

    .venv/bin/python benchmarks/instruct_vs_head.py --head runs/sst2-smollm2-lora --sft runs/sst2-smollm2-sft-lora

Per run: test accuracy and macro-F1 recomputed here from the predicted labels (the head: `hftl.load(...).predict`
with the run's decisions; the instruction-tuned model: greedy replies to the test file's user turns, the first word
of a reply matched to the labels, anything else counted wrong), the trainable parameters and training time the run
recorded, and prediction throughput (texts/s over all test texts, --repeats passes interleaved after a warm-up,
the median pass). The machine (CPU flags, threads) is printed with the table.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--head", type=Path, required=True, help="a text-classification run on SST-2")
    parser.add_argument("--sft", type=Path, required=True, help="an instruction-tuning run on SST-2 as instructions")
    parser.add_argument("--head-test", type=Path, help="TSV test file (default: the head run's data.test)")
    parser.add_argument("--sft-test", type=Path, help="JSONL test file (default: the SFT run's data.test)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args(argv)


def macro_f1(predicted: list[str], gold: list[str], labels: list[str]) -> float:
    scores = []
    for label in labels:
        tp = sum(p == label and g == label for p, g in zip(predicted, gold))
        fp = sum(p == label and g != label for p, g in zip(predicted, gold))
        fn = sum(p != label and g == label for p, g in zip(predicted, gold))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / len(scores)


def first_word(reply: str) -> str:
    words = re.findall(r"[a-z]+", reply.lower())
    return words[0] if words else ""


def recorded(run: Path) -> dict:
    train = json.loads((run / "metrics.json").read_text(encoding="utf-8")).get("train", {})
    return {"trainable_params": train.get("trainable_params"), "train_runtime_s": train.get("train_runtime")}


def main(argv=None) -> int:
    import csv

    import hftl
    from hftl.run_dir import RunDir
    from machine import interleaved_throughput, print_results

    args = parse_args(argv)
    head_config, sft_config = RunDir(args.head).saved_config(), RunDir(args.sft).saved_config()
    head_test = args.head_test or (args.head / head_config["data"]["test"]).resolve()  # saved relative to the run
    sft_test = args.sft_test or (args.sft / sft_config["data"]["test"]).resolve()
    with head_test.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    head_texts = [r[head_config["data"].get("text_column", "sentence")] for r in rows]
    conversations = [json.loads(line)["messages"] for line in sft_test.read_text(encoding="utf-8").splitlines() if line]
    prompts = [c[:-1] for c in conversations]
    gold = [c[-1]["content"].strip().lower() for c in conversations]
    labels = sorted(set(gold))
    head_gold = [labels[int(r[head_config["data"].get("label_column", "label")])] for r in rows]
    if len(head_texts) != len(prompts):
        raise SystemExit(f"{head_test} has {len(head_texts)} rows, {sft_test} {len(prompts)}: not the same test set")

    head, sft = hftl.load(args.head), hftl.load(args.sft)
    head_names = {str(i): name for i, name in enumerate(labels)}

    def predict_head():
        return [head_names.get(str(p["label"]), str(p["label"])) for p in head.predict(head_texts)]

    def predict_sft():
        return [first_word(p["generated_text"]) for p in sft.predict(prompts, max_new_tokens=4, batch_size=16)]

    models = {"classification head (LoRA)": (args.head, predict_head, head_gold),
              "instruction tuning (LoRA), generated answer": (args.sft, predict_sft, gold)}
    figures = {}
    for name, (run, predict, truth) in models.items():  # warm-up, and the labels the metrics are computed from
        predicted = predict()
        figures[name] = {"accuracy": sum(p == g for p, g in zip(predicted, truth)) / len(truth),
                         "macro_f1": macro_f1(predicted, truth, labels),
                         "unparseable": sum(p not in labels for p in predicted), **recorded(run)}
    speeds = interleaved_throughput({name: predict for name, (_, predict, _) in models.items()}, len(gold), args.repeats)
    lines = ["| model | test accuracy | macro-F1 | unparseable | trainable parameters | training time (s) | "
             "prediction texts/s |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, row in figures.items():
        row["texts_per_second"] = speeds[name]
        lines.append(f"| {name} | {row['accuracy']:.4f} | {row['macro_f1']:.4f} | {row['unparseable']} | "
                     f"{row['trainable_params']:,} | {row['train_runtime_s']:.0f} | {row['texts_per_second']:.1f} |")
    print_results(f"{len(gold)} SST-2 test sentences; {args.repeats} timed passes each (median)", lines, figures, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
