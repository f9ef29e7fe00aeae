#!/usr/bin/env bash
# One GPU benchmark run (<= 8 minutes on one H100/H200-class GPU): BERT-base-sized SST-2-style classification,
# the same at sequence length 128 (the MFU target), and ViT-base on random images, through transformers.Trainer
# in bf16; eager vs SDPA vs fused AdamW vs torch.compile (+ hftl's first-token last layer). See docs/benchmarks.md.
#
#   bash benchmarks/gpu.sh                      # the full run; results JSON in $OUT or benchmarks/results/
#   bash benchmarks/gpu.sh --dry-run            # tiny sizes on CPU, fp32, a handful of steps (tests/test_gpu_bench.py)
#   bash benchmarks/gpu.sh --peak-tflops 989    # MFU against this peak (default: from the GPU's name)
#   PYTHON=/path/to/python bash benchmarks/gpu.sh   # the interpreter (default: .venv/bin/python, else python3)
#
# Any other option goes to benchmarks/gpu_bench.py (--help lists them).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$repo/.venv/bin/python" ]]; then PYTHON="$repo/.venv/bin/python"; else PYTHON=python3; fi
fi
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
exec "$PYTHON" "$here/gpu_bench.py" "$@"
