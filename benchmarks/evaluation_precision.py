"""What computing a run's figures in float32 costs against bfloat16 autocast, side by side in one process.

A run evaluates in float32 unless `speed.bf16: true` (`hftl/precision.py`), also when it trained in bf16, so
that its figures are what `hftl evaluate` computes on it. This measures the price, on a task's own evaluation
(`Recipe.evaluate_trained`: for instruction tuning, the loss on assistant tokens and the greedy test replies):

    .venv/bin/python benchmarks/evaluation_precision.py recipes/configs/dolly_smollm2_sft_lora.yaml \
        --set data.test=../shared/datasets/instruct/test.jsonl --set data.max_eval_samples=48 \
        --set data.generation_samples=16 --set data.generation_max_new_tokens=64 --repeats 2

The config's model as it loads (the base checkpoint: evaluation costs the same before and after tuning) is
evaluated on the config's test data `--repeats` times in each precision, alternating. Printed: the median
seconds of each, their ratio, and the figures in each precision. The machine (CPU flags, threads) is printed
with the table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path, help="a run config (its model, test data and evaluation settings)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from machine import machine_info, machine_lines

    from hftl.precision import BFLOAT16, FLOAT32, autocast_for
    from hftl.preflight import load_config
    from hftl.tasks import get_recipe_class

    config = load_config(args.config, args.overrides, check=False)  # nothing is trained or written
    recipe = get_recipe_class(config.task)(config)
    processor = recipe.load_processor()
    model, _ = recipe.load_model(processor, None)
    model.eval()
    seconds, figures = {BFLOAT16: [], FLOAT32: []}, {}
    for _ in range(args.repeats):
        for precision in (BFLOAT16, FLOAT32):
            start = time.perf_counter()
            with autocast_for(model, precision):
                metrics = recipe.evaluate_trained(model, processor, None)
            seconds[precision].append(time.perf_counter() - start)
            metrics.pop("generations", None)
            figures[precision] = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    median = {precision: statistics.median(times) for precision, times in seconds.items()}
    print(f"\n{args.config} ({recipe.task}), {args.repeats} repeats each, alternating")
    print("| precision | median seconds | " + " | ".join(figures[FLOAT32]) + " |")
    print("|---|---:|" + "---:|" * len(figures[FLOAT32]))
    for precision in (BFLOAT16, FLOAT32):
        values = " | ".join(f"{figures[precision].get(k, float('nan')):.4f}" for k in figures[FLOAT32])
        print(f"| {precision} | {median[precision]:.1f} | {values} |")
    print(f"float32 / bfloat16 time: {median[FLOAT32] / median[BFLOAT16]:.2f}x")
    info = machine_info(bf16=True)
    print("\n".join(machine_lines(bf16="both, side by side", info=info)))
    if args.json:
        args.json.write_text(json.dumps({"config": str(args.config), "seconds": seconds, "figures": figures,
                                         "machine": info}, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
