"""Turn SST-2 (or GoEmotions) into instruction-formatted classification: chat `messages` JSON lines whose answer
is a label word, for `task: instruction-tuning` with `data.answer_labels`.

    python recipes/data/instruction_classification.py sst2 --out runs/datasets/sst2-instruct --train-rows 2000
    python recipes/data/instruction_classification.py goemotions --out runs/datasets/goemotions-instruct

Reads ../shared/datasets/<name>/ (tab-separated, no CSV quoting) and writes OUT/train.jsonl (the first
--train-rows of a seeded shuffle of train.tsv), OUT/validation.jsonl (--validation-rows of dev.tsv) and
OUT/test.jsonl (all of test.tsv: SST-2's 872 published-test sentences). Each line:

    {"messages": [{"role": "user", "content": "<instruction>\\n\\nReview: <sentence>"},
                  {"role": "assistant", "content": "positive"}]}

SST-2: labels `negative` / `positive`. GoEmotions: the single-label rows only (16% of train carries several
emotions and is left out), answers are the emotion names. The same instruction is used for zero-shot
evaluation of the base model (the run's `before_training` metrics), so the comparison is like for like.
"""

import argparse
import csv
import json
import random
from pathlib import Path

DATA = Path(__file__).resolve().parents[3] / "shared" / "datasets"
SST2_INSTRUCTION = ("Is the sentiment of this movie review positive or negative? Answer with one word: "
                    "positive or negative.")


def read_tsv(path: Path) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


def sst2_rows(path: Path) -> list[dict]:
    names = {"0": "negative", "1": "positive"}
    return [{"messages": [{"role": "user", "content": f"{SST2_INSTRUCTION}\n\nReview: {row['sentence'].strip()}"},
                          {"role": "assistant", "content": names[row["label"]]}]} for row in read_tsv(path)]


def goemotions_rows(path: Path, names: list[str]) -> list[dict]:
    instruction = f"Which emotion does this comment express? Answer with one word from: {', '.join(names)}."
    return [{"messages": [{"role": "user", "content": f"{instruction}\n\nComment: {row['text'].strip()}"},
                          {"role": "assistant", "content": names[int(row["labels"])]}]}
            for row in read_tsv(path) if "," not in row["labels"]]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=["sst2", "goemotions"])
    parser.add_argument("--out", required=True, help="folder to create")
    parser.add_argument("--data", default=None, help="the dataset folder (default ../shared/datasets/<dataset>)")
    parser.add_argument("--train-rows", type=int, default=2000, help="training rows kept (seeded shuffle)")
    parser.add_argument("--validation-rows", type=int, default=200, help="validation rows kept (first of dev)")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    folder = Path(args.data) if args.data else DATA / args.dataset
    if not folder.is_dir():
        raise SystemExit(f"{folder}: not found. Give --data FOLDER holding train.tsv, dev.tsv and test.tsv.")
    if args.dataset == "sst2":
        convert = sst2_rows
    else:
        names = (folder / "emotions.txt").read_text(encoding="utf-8").split()
        convert = lambda path: goemotions_rows(path, names)  # noqa: E731
    train = convert(folder / "train.tsv")
    random.Random(args.seed).shuffle(train)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "train.jsonl", train[:args.train_rows])
    write_jsonl(out / "validation.jsonl", convert(folder / "dev.tsv")[:args.validation_rows])
    test = convert(folder / "test.tsv")
    write_jsonl(out / "test.jsonl", test)
    print(f"{out}: {min(args.train_rows, len(train))} train, {args.validation_rows} validation, {len(test)} test rows")


if __name__ == "__main__":
    main()
