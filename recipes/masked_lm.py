"""Masked-LM domain-adaptive pretraining (BERT-style encoders), launchable with accelerate.

    accelerate launch recipes/masked_lm.py --config recipes/configs/sst2_minilm_mlm.yaml
    accelerate launch --config_file recipes/accelerate/multi_gpu.yaml recipes/masked_lm.py \
        --config recipes/configs/sst2_minilm_mlm.yaml --set training.learning_rate=5e-4

Plain `python recipes/masked_lm.py --config ...` runs it in one process. See docs/language_modeling.md.
"""

import argparse
import sys

from hftl import MaskedLMRecipe
from hftl.errors import HftlError
from hftl.report import print_summary


def recipe_main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="a run config (YAML)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    try:
        result = MaskedLMRecipe.from_yaml(args.config, args.overrides).run()
    except HftlError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    if result.trainer.is_world_process_zero():
        print_summary(result)
    return 0


if __name__ == "__main__":
    sys.exit(recipe_main())
