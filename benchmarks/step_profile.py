"""Where one training step's time goes, for two variants of the same model side by side.

    .venv/bin/python benchmarks/step_profile.py                    # packaged MiniLM, SST-2 batches of 32
    .venv/bin/python benchmarks/step_profile.py --batches grouped      # batches as length grouping makes them
    .venv/bin/python benchmarks/step_profile.py --compare first-token  # speed.first_token_last_layer off / on
    .venv/bin/python benchmarks/step_profile.py --model DIR --steps 20 --top 15 --rounds 3

Two copies of the model with the same weights train on the same batches, steps interleaved
(A B A B ...), each as the Trainer runs it on this machine: bf16 autocast where the CPU has it, loss
backward, gradient clipping, fused AdamW. Prints the median step time of each (forward, backward,
clip + optimizer) and the torch profiler's top operators (self time per step) for each.

--compare dropout (default): torch's dropout masks against hftl's cheap ones (`speed.cheap_dropout`).
--compare first-token: the full last encoder layer against `speed.first_token_last_layer` (both with
cheap dropout on CPU, as hftl trains by default). --rounds N repeats the interleaved timing N times
and prints each round's ratio and their median.
"""

from __future__ import annotations

import argparse
import copy
import csv
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(HERE)]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="packaged:all-MiniLM-L6-v2")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "datasets" / "sst2" / "train.tsv"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant (after 3 warm-up steps)")
    parser.add_argument("--batches", choices=("random", "grouped"), default="random",
                        help="random sentences, or batches cut from length-sorted windows of 1,000 sentences and "
                             "shuffled (the shapes the Trainer's group_by_length sampler gives)")
    parser.add_argument("--compare", choices=("dropout", "first-token"), default="dropout",
                        help="which speed switch the two variants differ in")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved timing rounds (ratio per round, median)")
    parser.add_argument("--top", type=int, default=12, help="operators listed per variant (0: no profile)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from machine import machine_lines
    from run import resolve_model

    from hftl.speed.cheap_dropout import use_cheap_dropout
    from hftl.speed.first_token_last_layer import use_first_token_last_layer
    from hftl.trainer import bf16_is_fast

    args = parse_args(argv)
    torch.manual_seed(args.seed)
    folder = resolve_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with open(args.data, encoding="utf-8", newline="") as handle:
        rows = [row["sentence"] for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)]
    count = (args.steps + 3) * args.batch_size
    if args.batches == "grouped":
        groups = []
        for start in range(0, count, 1000):
            window = rows[start:start + 1000]
            lengths = [len(ids) for ids in tokenizer(window, truncation=True, max_length=128)["input_ids"]]
            window = [window[i] for i in sorted(range(len(window)), key=lengths.__getitem__)]
            groups += [window[i:i + args.batch_size] for i in range(0, len(window), args.batch_size)]
        groups = [groups[i] for i in torch.randperm(len(groups)).tolist()][:args.steps + 3]
    else:
        order = torch.randperm(len(rows)).tolist()[:count]
        groups = [[rows[i] for i in order[i:i + args.batch_size]] for i in range(0, count, args.batch_size)]
    batches = []
    for texts in groups:
        batch = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
        batch["labels"] = torch.randint(0, 2, (len(texts),))
        batches.append(batch)

    plain = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2).train()
    other = copy.deepcopy(plain)
    if args.compare == "dropout":
        use_cheap_dropout(other)
        variants, label = {"torch dropout": plain, "cheap dropout": other}, "cheap dropout"
    else:
        use_cheap_dropout(plain)  # hftl's default on CPU: both variants draw cheap masks
        use_cheap_dropout(other)
        if not use_first_token_last_layer(other):
            raise SystemExit(f"{folder}: speed.first_token_last_layer does not apply to this architecture")
        variants, label = {"full last layer": plain, "first-token last": other}, "first-token last layer"
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-5, fused=True) for name, m in variants.items()}
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16_is_fast())

    def step(name, batch):
        model, optimizer = variants[name], optimizers[name]
        start = time.perf_counter()
        with autocast:
            loss = model(**batch).loss
        forward = time.perf_counter()
        loss.backward()
        backward = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return forward - start, backward - forward, time.perf_counter() - backward

    tokens = statistics.mean(int(b["input_ids"].numel()) for b in batches)
    print("\n".join(machine_lines(bf16_is_fast())))
    print(f"{folder}: {args.steps} steps of {args.batch_size} sentences (~{tokens:.0f} token positions), "
          f"bf16 autocast {'on' if bf16_is_fast() else 'off'}, {torch.get_num_threads()} threads, "
          f"{args.rounds} round(s)")
    first, second = variants
    round_ratios = []
    for round_ in range(args.rounds):
        times = {name: [] for name in variants}
        for index, batch in enumerate(batches):
            for name in variants:
                result = step(name, batch)
                if index >= 3:
                    times[name].append(result)
        print(f"round {round_ + 1}: {'variant':17s} {'step ms':>8s} {'forward':>8s} {'backward':>9s} {'clip+opt':>9s}")
        medians = {}
        for name, rows_ in times.items():
            parts = [statistics.median(r[i] for r in rows_) * 1e3 for i in range(3)]
            medians[name] = statistics.median(sum(r) for r in rows_) * 1e3
            print(f"         {name:17s} {medians[name]:8.1f} {parts[0]:8.1f} {parts[1]:9.1f} {parts[2]:9.1f}")
        round_ratios.append(medians[first] / medians[second])
        print(f"         {label}: {round_ratios[-1]:.3f}x faster steps")
    if args.rounds > 1:
        print(f"{label}: median over {args.rounds} rounds {statistics.median(round_ratios):.3f}x faster steps "
              f"(rounds: {', '.join(f'{r:.3f}' for r in round_ratios)})")
    if args.top <= 0:
        return 0

    from torch.profiler import ProfilerActivity, profile

    for name in variants:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for batch in batches[3:]:
                step(name, batch)
        events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
        total = sum(e.self_cpu_time_total for e in events)
        print(f"\n{name}: top operators, self time per step")
        for event in events[:args.top]:
            share = event.self_cpu_time_total / total
            print(f"  {event.key:42s} {event.self_cpu_time_total / args.steps / 1e3:7.1f} ms  {share:6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
