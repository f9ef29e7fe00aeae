"""Text classification, launchable with accelerate.

    accelerate launch recipes/text_classification.py --config recipes/configs/sst2_minilm_lora.yaml
    accelerate launch --config_file recipes/accelerate/multi_gpu.yaml recipes/text_classification.py \
        --config recipes/configs/sst2_minilm_full.yaml --set training.learning_rate=1e-4

Plain `python recipes/text_classification.py --config ...` runs it in one process.
"""

import sys

from hftl import TextClassificationRecipe
from hftl.launch import recipe_main

if __name__ == "__main__":
    sys.exit(recipe_main(TextClassificationRecipe, __doc__))
