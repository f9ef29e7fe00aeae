"""What machine a benchmark ran on: one helper for every script in benchmarks/ that prints a table.

    from machine import machine_info, machine_lines
    print("\\n".join(machine_lines(bf16=True)))   # next to the table
    report["machine"] = machine_info(bf16=True)  # in the JSON

The CPU model and the flags that decide bf16 speed on CPUs (avx512_bf16, amx_bf16 / amx_tile), torch's
thread count, the torch / transformers versions, whether bf16 was on and the GPU, if any.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

#: CPU flags that matter for the numbers here: bf16 matmuls (AVX512-BF16, AMX) and their fallbacks
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile", "amx_int8")


def _cpuinfo() -> tuple[str, set[str]]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:  # not Linux: the model from platform, no flags
        return platform.processor() or platform.machine(), set()
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return model, flags


def machine_info(bf16: bool | None = None) -> dict:
    """The machine as a dict for results JSON.

    Args:
        bf16 (`bool`, *optional*): whether the measured runs used bfloat16 (None: not one answer, e.g. per variant).
    """
    import torch
    import transformers

    model, flags = _cpuinfo()
    info = {
        "platform": platform.platform(), "python": platform.python_version(), "cpu": model,
        "cpus": os.cpu_count(), "cpu_flags": {flag: flag in flags for flag in CPU_FLAGS},
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "transformers": transformers.__version__,
        "bf16": bf16, "cuda": None, "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    # kept for readers of older results JSON
    info["avx512_bf16"], info["amx_bf16"] = info["cpu_flags"]["avx512_bf16"], info["cpu_flags"]["amx_bf16"]
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["cuda"] = {"name": props.name, "count": torch.cuda.device_count(), "memory_gb": props.total_memory / 2**30,
                        "capability": f"{props.major}.{props.minor}", "cuda": torch.version.cuda}
    return info


def machine_lines(bf16: bool | str | None = None, info: dict | None = None) -> list[str]:
    """Two or three lines describing the machine, to print next to a table.

    Args:
        bf16 (`bool` or `str`, *optional*): whether bf16 was on, or a phrase ("per variant: hftl auto = on").
        info (`dict`, *optional*): a `machine_info()` result to describe instead of measuring again.
    """
    info = info or machine_info(bf16 if isinstance(bf16, bool) else None)
    flags = " ".join(f"{flag}={'yes' if present else 'no'}" for flag, present in info["cpu_flags"].items())
    bf16_text = bf16 if isinstance(bf16, str) else {True: "on", False: "off", None: "not stated"}[bf16]
    lines = [
        f"machine: {info['cpu'] or 'unknown CPU'}, {info['cpus']} CPUs; flags {flags}; "
        f"torch CPU capability {info['torch_cpu_capability']}",
        f"torch {info['torch']} ({info['torch_threads']} thread{'s' * (info['torch_threads'] != 1)}), "
        f"transformers {info['transformers']}, "
        f"Python {info['python']}; bf16 {bf16_text}",
    ]
    if info.get("cuda"):
        cuda = info["cuda"]
        lines.append(f"GPU: {cuda['name']} x{cuda['count']} ({cuda['memory_gb']:.0f} GiB, sm {cuda['capability']}, "
                     f"CUDA {cuda['cuda']})")
    return lines


def interleaved_throughput(predictors: dict, count: int, repeats: int) -> dict[str, float]:
    """Items/s of each zero-argument `predictors[name]()` (which handles `count` items), timed `repeats` times in
    turn (so a change of load hits every model alike): the median pass of each. Warm up before calling this."""
    import statistics
    import time

    passes: dict[str, list[float]] = {name: [] for name in predictors}
    for _ in range(repeats):
        for name, predict in predictors.items():
            start = time.perf_counter()
            predict()
            passes[name].append(count / (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in passes.items()}


def print_results(heading: str, table: list[str], figures: dict, json_path=None, bf16: bool | str | None = False) -> None:
    """A benchmark's table under its heading, the machine beneath it, and the figures as JSON where asked."""
    import json

    print(heading)
    print("\n".join(table))
    print("\n".join(machine_lines(bf16=bf16)))
    if json_path:
        Path(json_path).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
