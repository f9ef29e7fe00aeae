"""Preference pairs from an instruction-tuned run's own replies that do not end (`hftl.tasks.own_reply_pairs`):
chosen is the data's reference answer, rejected the run's plain greedy reply that looped or ran to the token limit.

    python recipes/data/own_reply_pairs.py runs/dolly-smollm2-sft-lora \\
        --data ../shared/datasets/instruct/train.jsonl --skip 500 --limit 800 --out runs/datasets/dolly-own/train.jsonl

Reads --data with the run's data settings (its format and columns), rows --skip+1 to --skip+--limit (use rows the
run did not train on), generates in the precision of the run's own figures, and writes one pair a line in TRL's
conversational preference format, for `task: preference-tuning` (`model.name_or_path`: the run exported with
`hftl export RUN --merged`). Logs its progress and prints how the replies ended. An existing --out is never overwritten.

RUN may be such a preference-tuning run too, for a second round (SPIN iterates): its replies are then read as chat
`messages` (with the run's system prompt), and --max-new-tokens is required, since a preference run has no
generation settings.
"""

import argparse
import json
import logging
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a finished instruction-tuning run")
    parser.add_argument("--data", required=True, help="conversations: a file or Hub id the run's data settings read")
    parser.add_argument("--out", required=True, type=Path, help="the JSON lines file to write")
    parser.add_argument("--skip", type=int, default=0, help="rows to skip first (e.g. the rows the run trained on)")
    parser.add_argument("--limit", type=int, default=None, help="rows to read after those skipped")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="the token limit of a reply (default: the run's data.generation_max_new_tokens; "
                             "required for a preference-tuning run)")
    parser.add_argument("--max-length", type=int, default=None,
                        help="skip conversations longer than this in tokens (prompt and reference): give preference "
                             "tuning's data.max_length, which would drop or cut their pairs")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    if args.out.exists():
        parser.error(f"{args.out} exists; give a new --out (nothing is overwritten).")

    from hftl.data.conversations import read_conversations
    from hftl.inference import load
    from hftl.tasks import recipe_for_run
    from hftl.tasks.instruction_tuning import InstructionData
    from hftl.tasks.own_reply_pairs import own_reply_pairs

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    # the run's config only, so that arguments and rows are checked before the model loads
    recipe = recipe_for_run(args.run_dir)
    data = recipe.config.data
    if not isinstance(data, InstructionData):  # a preference-tuning run: a second round
        if args.max_new_tokens is None:
            parser.error(f"{args.run_dir} is a {recipe.task} run, which has no generation settings: give "
                         "--max-new-tokens (the first round's run has it as data.generation_max_new_tokens).")
        data = InstructionData(train=args.data, system_prompt=data.system_prompt)
    end = None if args.limit is None else args.skip + args.limit
    conversations = read_conversations(args.data, data, "train", end)[args.skip:]
    run = load(args.run_dir)
    start = time.perf_counter()
    with run.in_run_precision():
        pairs, ends = own_reply_pairs(run.model, run.processor, conversations,
                                      args.max_new_tokens or data.generation_max_new_tokens, args.batch_size,
                                      args.max_length)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("x", encoding="utf-8") as handle:
        handle.writelines(json.dumps(pair, ensure_ascii=False) + "\n" for pair in pairs)
    print(f"{len(conversations)} prompts in {time.perf_counter() - start:.0f} s; replies: "
          + ", ".join(f"{n} {how}" for how, n in sorted(ends.items())) + f"; {len(pairs)} pairs written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
