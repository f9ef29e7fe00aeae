"""The shared entry point of the launchable scripts in `recipes/` (plain `python` or `accelerate launch`)."""

from __future__ import annotations

import argparse
import logging
import sys

from hftl.errors import HftlError
from hftl.report import print_summary
from hftl.runner import run_recipe


def recipe_main(recipe_class, description: str | None = None, argv: list[str] | None = None) -> int:
    """Parse `--config FILE [--set KEY=VALUE ...]`, run `recipe_class`, print the summary on the main process."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help=f"a run config (YAML) with task: {recipe_class.task}")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set training.learning_rate=1e-4 (repeatable)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = run_recipe(recipe_class.from_yaml(args.config, args.overrides))
    except HftlError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    if result.trainer.is_world_process_zero():
        print_summary(result)
    return 0
