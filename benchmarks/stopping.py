"""How an instruction-tuned run's test replies end under plain greedy decoding and with a repetition penalty on
the reply's own tokens (`data.generation_repetition_penalty`, `hftl generate --repetition-penalty`), side by side
in one process (docs/results.md, issue 25).

    .venv/bin/python benchmarks/stopping.py runs/dolly-smollm2-sft-lora --penalties 1.0 1.1 1.2 --json out.json

Per penalty, on the run's first `--samples` test prompts (the run's own test data, as `hftl evaluate` reads it):
the shares of replies that stopped on their own, that reached the limit repeating themselves or cut, the mean
reply length, ROUGE-L and exact match against the references, and the seconds taken; all computed by the run's
recipe (`generation_metrics`, the code the run's own test evaluation uses), so penalty 1.0 reproduces the run's
recorded figures (both in the run's precision, `hftl.precision`). The machine (CPU flags, threads) is printed with
the table.

`--prompts-of OTHER_RUN` scores the run on another instruction-tuning run's test prompts, read and scored by that
run's recipe and settings: a preference-tuned run (`task: preference-tuning`, whose own test data are pairs) on the
prompts its starting model was measured on, like for like.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a finished instruction-tuning run")
    parser.add_argument("--penalties", type=float, nargs="+", default=[1.0, 1.1, 1.2])
    parser.add_argument("--samples", type=int, help="test prompts (default: the run's data.generation_samples)")
    parser.add_argument("--max-new-tokens", type=int, help="default: the run's data.generation_max_new_tokens")
    parser.add_argument("--json", type=Path, help="also write the figures and every reply here")
    parser.add_argument("--prompts-of", type=Path, help="an instruction-tuning run whose test prompts, settings and "
                                                        "scoring to use (default: the run's own)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from machine import machine_info, machine_lines

    from hftl.inference import load
    from hftl.tasks import recipe_for_run

    loaded = load(args.run_dir)
    recipe = recipe_for_run(args.prompts_of) if args.prompts_of else loaded.recipe
    data = recipe.config.data
    conversations = recipe.prepare_source(recipe.evaluation_source(None), loaded.processor).conversations
    samples = args.samples or data.generation_samples
    max_new_tokens = args.max_new_tokens or data.generation_max_new_tokens
    rows, replies = [], {}
    for penalty in args.penalties:
        variant = dataclasses.replace(data, generation_repetition_penalty=penalty, generation_samples=samples,
                                      generation_max_new_tokens=max_new_tokens)
        start = time.perf_counter()
        with loaded.in_run_precision():
            metrics = type(recipe)(dataclasses.replace(recipe.config, data=variant)).generation_metrics(
                loaded.model, loaded.processor, conversations)
        seconds = time.perf_counter() - start
        replies[str(penalty)] = metrics.pop("generations")
        rows.append({"repetition_penalty": penalty, "seconds": round(seconds, 1),
                     **{k: metrics[k] for k in ("generated", "stopped", "repeating", "cut", "mean_new_tokens",
                                                 "rouge_l", "exact_match")}})
        print(f"penalty {penalty}: {rows[-1]}", flush=True)
    info = machine_info()
    of = f" of {args.prompts_of}" if args.prompts_of else ""
    print(f"\n{args.run_dir}: {rows[0]['generated']} test prompts{of}, up to {max_new_tokens} new tokens")
    print("| repetition penalty | stopped | repeating | cut | mean new tokens | ROUGE-L | exact match | seconds |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['repetition_penalty']} | {row['stopped']:.1%} | {row['repeating']:.1%} | {row['cut']:.1%} | "
              f"{row['mean_new_tokens']:.0f} | {row['rouge_l']:.4f} | {row['exact_match']:.3f} | {row['seconds']:.0f} |")
    print("\n".join(machine_lines(info=info)))
    if args.json:
        args.json.write_text(json.dumps({"run": str(args.run_dir), "prompts_of": str(args.prompts_of or args.run_dir),
                                         "rows": rows, "machine": info, "replies": replies}, indent=1),
                             encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
