"""Image classification, launchable with accelerate.

    accelerate launch recipes/image_classification.py --config recipes/configs/digits_vit_lora.yaml
    accelerate launch --config_file recipes/accelerate/multi_gpu.yaml recipes/image_classification.py \
        --config recipes/configs/digits_vit_full.yaml --set training.learning_rate=1e-4

Plain `python recipes/image_classification.py --config ...` runs it in one process.
"""

import argparse
import logging
import sys

from hftl import ImageClassificationRecipe
from hftl.errors import HftlError
from hftl.report import print_summary


def recipe_main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="a run config (YAML) with task: image-classification")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = ImageClassificationRecipe.from_yaml(args.config, args.overrides).run()
    except HftlError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    if result.trainer.is_world_process_zero():
        print_summary(result)
    return 0


if __name__ == "__main__":
    sys.exit(recipe_main())
