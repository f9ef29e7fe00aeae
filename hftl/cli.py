"""The `hftl` command line. Each subcommand lives in `hftl/commands/<name>.py` and registers itself."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from hftl import __version__
from hftl.errors import HftlError
from hftl.tasks import registered_tasks

#: subcommand modules, in the order `hftl --help` lists them
COMMANDS = ["train", "validate", "evaluate", "demo", "models", "generate", "chat", "predict", "card", "push", "export",
            "distill", "tune", "compare", "ui"]

EPILOG = """examples:
  hftl demo                                          fine-tune the packaged MiniLM on the bundled demo set
  hftl demo --data ../shared/datasets/sst2           ... on SST-2 (train.tsv / test.tsv) instead
  hftl train recipes/configs/sst2_minilm_lora.yaml --set training.learning_rate=1e-4
  hftl validate recipes/configs/sst2_minilm_lora.yaml   check a config and its data without training
  hftl evaluate runs/sst2-minilm-lora --data test.tsv   metrics of a finished run on new data
  hftl tune CONFIG.yaml --trials 24 --top 3 --seeds 3   search hyperparameters, pick by the mean over seeds
  hftl compare runs/a runs/b                         a table of two runs, their config diff and curves
  accelerate launch recipes/text_classification.py --config recipes/configs/sst2_minilm_lora.yaml
"""


def build_parser() -> argparse.ArgumentParser:
    tasks = "\n".join(f"  {name:<22} {recipe.title}" for name, recipe in registered_tasks().items())
    parser = argparse.ArgumentParser(
        prog="hftl",
        description="Transfer learning on Hugging Face: fine-tune a pretrained checkpoint on your data.",
        epilog=f"tasks (the config's `task:`):\n{tasks}\n\n{EPILOG}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"hftl {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"hftl.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args) or 0
    except HftlError as err:
        print(f"hftl {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
