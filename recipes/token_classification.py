"""Token classification (named-entity recognition), launchable with accelerate.

    accelerate launch recipes/token_classification.py --config recipes/configs/wnut17_minilm_lora.yaml
    accelerate launch --config_file recipes/accelerate/multi_gpu.yaml recipes/token_classification.py \
        --config recipes/configs/wnut17_minilm_full.yaml --set training.learning_rate=5e-5

Plain `python recipes/token_classification.py --config ...` runs it in one process.
"""

import sys

from hftl.launch import recipe_main
from hftl.tasks.token_classification import TokenClassificationRecipe

if __name__ == "__main__":
    sys.exit(recipe_main(TokenClassificationRecipe, __doc__))
