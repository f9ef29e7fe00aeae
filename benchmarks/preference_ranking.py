"""How far preference tuning moved the model's own ranking of the test pairs, for finished runs (docs/results.md,
issue 25): the figures a run records since `ranking_shift` was added, for runs recorded before it.

    .venv/bin/python benchmarks/preference_ranking.py RUN [RUN ...] [--json out.json]

A run loaded from its folder is the merged model, without its reference; the reference is loaded here from the run's
own `model.name_or_path` (LoRA's reference is that base with the adapter disabled, the same weights), once for all
runs, which must share the checkpoint and test data. Per run: the model's own preference accuracy (mean
log-probability per token) before and after, the pairs tuning flipped to right and to wrong, the median shift of the
per-token gap and the median gap of the pairs the reference ranks wrong: computed by the task's own code
(`sequence_logps`, `ranking_shift`). The machine is printed with the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+", help="finished preference-tuning runs of one checkpoint")
    parser.add_argument("--json", type=Path, help="also write the figures and each pair's gaps here")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from machine import machine_info, machine_lines
    from transformers import AutoModelForCausalLM

    from hftl.inference import load
    from hftl.modeling import load_pretrained_model
    from hftl.tasks.preference_tuning import per_token_gaps, ranking_shift, sequence_logps

    def accuracy(logps) -> float:  # the run's `preference_accuracy`
        gaps = per_token_gaps(logps)
        return sum(gap > 0 for gap in gaps) / len(gaps)

    rows, reference, results = None, None, []
    for run in args.runs:
        loaded = load(run)
        recipe, tokenizer = loaded.recipe, loaded.processor
        pairs = recipe.prepare_source(recipe.evaluation_source(None), tokenizer).encoded
        these = [(e.prompt, e.chosen) for e in pairs] + [(e.prompt, e.rejected) for e in pairs]
        if reference is None:
            rows = these
            base, _ = load_pretrained_model(AutoModelForCausalLM, recipe.config.model)
            reference = sequence_logps(base, rows, tokenizer.pad_token_id or 0)
            del base
        elif these != rows:
            parser.error(f"{run}: its test pairs are not the first run's; compare runs of the same test data")
        policy = sequence_logps(loaded.model, rows, tokenizer.pad_token_id or 0)
        results.append({"run": str(run), "pairs": len(pairs), "preference_accuracy_before": accuracy(reference),
                        "preference_accuracy": accuracy(policy), **ranking_shift(policy, reference),
                        "logps": policy})
        print(f"{run}: done", flush=True)
    print("| run | pairs | preference accuracy before / after | flipped right / wrong | median shift of the "
          "per-token gap (nats) | median gap of the reference's wrong pairs (nats) |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['run']} | {r['pairs']} | {r['preference_accuracy_before']:.3f} / {r['preference_accuracy']:.3f} | "
              f"{r['ranking_flipped_right']} / {r['ranking_flipped_wrong']} | {r['ranking_gap_shift']:.3f} | "
              f"{r['reference_wrong_gap']:.3f} |")
    info = machine_info()
    print("\n".join(machine_lines(info=info)))
    if args.json:
        args.json.write_text(json.dumps({"runs": results, "reference_logps": reference, "machine": info}, indent=1),
                             encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
