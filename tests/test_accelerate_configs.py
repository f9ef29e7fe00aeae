"""The shipped accelerate configs load with accelerate's own loader and say what they claim."""

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file

CONFIG_DIR = Path(__file__).resolve().parent.parent / "recipes" / "accelerate"
EXPECTED = {
    "single_gpu.yaml": ("NO", 1, 1),
    "multi_gpu.yaml": ("MULTI_GPU", 4, 1),
    "cpu_ddp.yaml": ("MULTI_GPU", 2, 1),
    "multi_node.yaml": ("MULTI_GPU", 16, 2),
    "fsdp.yaml": ("FSDP", 8, 1),
    "deepspeed_zero2.yaml": ("DEEPSPEED", 8, 1),
}


def test_every_shipped_config_is_covered():
    assert {p.name for p in CONFIG_DIR.glob("*.yaml")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_loads(name):
    config = load_config_from_file(str(CONFIG_DIR / name))
    assert isinstance(config, ClusterConfig)
    distributed_type, processes, machines = EXPECTED[name]
    assert str(config.distributed_type).split(".")[-1] == distributed_type
    assert (config.num_processes, config.num_machines) == (processes, machines)
    if distributed_type == "FSDP":
        assert config.fsdp_config["fsdp_version"] == 2
    if distributed_type == "DEEPSPEED":
        assert config.deepspeed_config["zero_stage"] == 2
