"""Masked-LM domain-adaptive pretraining (BERT-style encoders), launchable with accelerate.

    accelerate launch recipes/masked_lm.py --config recipes/configs/sst2_minilm_mlm.yaml
    accelerate launch --config_file recipes/accelerate/multi_gpu.yaml recipes/masked_lm.py \
        --config recipes/configs/sst2_minilm_mlm.yaml --set training.learning_rate=5e-4

Plain `python recipes/masked_lm.py --config ...` runs it in one process. See docs/language_modeling.md.
"""

import sys

from hftl import MaskedLMRecipe
from hftl.launch import recipe_main

if __name__ == "__main__":
    sys.exit(recipe_main(MaskedLMRecipe, __doc__))
