"""preference tuning (PreferenceTuningRecipe), launchable with accelerate.

    accelerate launch recipes/preference_tuning.py --config recipes/configs/oasst_smollm2_dpo_lora.yaml

Plain `python recipes/preference_tuning.py --config ...` runs it in one process. See docs/instruction_tuning.md.
"""

import sys

from hftl import PreferenceTuningRecipe
from hftl.launch import recipe_main

if __name__ == "__main__":
    sys.exit(recipe_main(PreferenceTuningRecipe, __doc__))
