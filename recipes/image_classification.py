"""Image classification, launchable with accelerate.

    accelerate launch recipes/image_classification.py --config recipes/configs/digits_vit_lora.yaml
    accelerate launch --config_file recipes/accelerate/multi_gpu.yaml recipes/image_classification.py \
        --config recipes/configs/digits_vit_full.yaml --set training.learning_rate=1e-4

Plain `python recipes/image_classification.py --config ...` runs it in one process.
"""

import sys

from hftl import ImageClassificationRecipe
from hftl.launch import recipe_main

if __name__ == "__main__":
    sys.exit(recipe_main(ImageClassificationRecipe, __doc__))
