"""Causal-LM fine-tuning (GPT-style decoders), launchable with accelerate.

    accelerate launch recipes/causal_lm.py --config recipes/configs/sst2_smollm2_clm_lora.yaml
    accelerate launch --config_file recipes/accelerate/multi_gpu.yaml recipes/causal_lm.py \
        --config recipes/configs/sst2_smollm2_clm_lora.yaml --set training.learning_rate=5e-4

Plain `python recipes/causal_lm.py --config ...` runs it in one process. See docs/language_modeling.md.
"""

import sys

from hftl import CausalLMRecipe
from hftl.launch import recipe_main

if __name__ == "__main__":
    sys.exit(recipe_main(CausalLMRecipe, __doc__))
