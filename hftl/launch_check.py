"""A launch that asked for more processes than the run got stops before training (`check_world_size`).

`accelerate launch --cpu --num_processes 2` (and `--num_machines 2`, one command per machine) goes through
accelerate's simple launcher, which starts one plain Python process per command whatever the counts say: its
child receives `MASTER_ADDR` / `MASTER_PORT` and `ACCELERATE_*` settings but no `WORLD_SIZE` or `RANK`
(`accelerate.utils.launch.prepare_simple_launcher_cmd_env`, accelerate 1.16). Each such process then trains alone,
and two of them write the same output folder. The child cannot learn the counts from its environment, so they are
read where the user gave them: the launching `accelerate launch` command (the parent process's command line, parsed
with accelerate's own `launch_command_parser`) and its config file (`load_config_from_file`). Where the parent is not
`accelerate launch`, or its command line cannot be read (no /proc), nothing is checked.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

from hftl.errors import HftlError


class LaunchMismatchError(HftlError):
    """The launcher was asked for more processes or machines than the run got."""


def _parent_command() -> list[str] | None:
    try:
        raw = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def _launch_arguments(command: list[str]) -> list[str] | None:
    """The arguments of `accelerate launch` in `command` (`accelerate launch ...` or `python -m
    accelerate.commands.launch ...`), or None where `command` is not that."""
    for i, part in enumerate(command):
        if os.path.basename(part) == "accelerate" and command[i + 1:i + 2] == ["launch"]:
            return command[i + 2:]
        if part == "accelerate.commands.launch":
            return command[i + 1:]
    return None


def requested_by_launcher(command: list[str] | None = None) -> dict | None:
    """What the `accelerate launch` that started this process asked for: {"processes", "machines", "command"}, or
    None where this process was not started by `accelerate launch` (or its command cannot be read).

    Args:
        command (`list[str]`, *optional*): the launching command line; default: this process's parent's.
    """
    command = _parent_command() if command is None else command
    arguments = _launch_arguments(command or [])
    if arguments is None:
        return None
    from accelerate.commands.config import default_config_file
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    try:
        with contextlib.redirect_stderr(io.StringIO()):
            args = launch_command_parser().parse_args(arguments)
    except SystemExit:  # not a command accelerate itself would have run
        return None
    config = None
    config_file = getattr(args, "config_file", None)
    if config_file or os.path.isfile(default_config_file):
        try:
            config = load_config_from_file(config_file)
        except (OSError, ValueError, TypeError):
            config = None
    processes = args.num_processes or getattr(config, "num_processes", None) or 1
    machines = args.num_machines or getattr(config, "num_machines", None) or 1
    return {"processes": int(processes), "machines": int(machines), "command": command}


def launch_problem(world_size: int, requested: dict | None) -> str | None:
    """Why a run of `world_size` processes does not match what its launcher asked for (`requested`), or None."""
    if requested is None:
        return None
    processes, machines = requested["processes"], requested["machines"]
    if world_size >= max(processes, machines):
        return None
    asked = f"{processes} process{'es' if processes > 1 else ''}" + (f" on {machines} machines" if machines > 1 else "")
    return (f"accelerate launch asked for {asked}, but this run has {world_size} (world size {world_size}): it would "
            "train alone, and every command launched so would write the same output folder. accelerate's --cpu "
            "flag starts one plain process per command, whatever --num_processes and --num_machines say. For several "
            "CPU processes launch with a config whose distributed_type is MULTI_GPU and use_cpu true: "
            "recipes/accelerate/cpu_ddp.yaml on one machine, recipes/accelerate/cpu_multi_node.yaml across "
            "machines (--machine_rank on each); on GPUs use --multi_gpu or a config.")


def check_world_size(world_size: int) -> None:
    """`LaunchMismatchError` (exit 2) where the launching `accelerate launch` asked for more processes or machines
    than `world_size`."""
    problem = launch_problem(world_size, requested_by_launcher())
    if problem:
        raise LaunchMismatchError(problem)
