"""instruction tuning (InstructionTuningRecipe), launchable with accelerate.

    accelerate launch recipes/instruction_tuning.py --config recipes/configs/sst2_smollm2_sft_lora.yaml

Plain `python recipes/instruction_tuning.py --config ...` runs it in one process. See docs/instruction_tuning.md.
"""

import sys

from hftl import InstructionTuningRecipe
from hftl.launch import recipe_main

if __name__ == "__main__":
    sys.exit(recipe_main(InstructionTuningRecipe, __doc__))
