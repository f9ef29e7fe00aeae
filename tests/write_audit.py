"""Records every file a process writes below one folder, for the tests that check that only rank 0 writes a run
folder (tests/test_distributed.py, tests/conformance_worker.py).

An audit hook sees `open` for writing, mkdir, rename, replace, remove and rmtree; `torch.save` and safetensors'
`save_file` write from C++/Rust, which the hook does not see, so they are wrapped. A write is recorded as its path
relative to the folder, prefixed by the event for anything but `open` ("os.mkdir checkpoint-4").
"""

from __future__ import annotations

import os
import sys

_EVENTS = ("os.rename", "os.replace", "os.remove", "os.mkdir", "shutil.rmtree", "os.unlink")


class WriteAudit:
    """`install()` once per process; `writes` holds (label, write) for every write while `label` is not None."""

    def __init__(self, root, label=None):
        self.root = os.path.realpath(os.fsdecode(root))
        self.label = label
        self.writes: list[tuple[object, str]] = []

    def below(self, path) -> bool:
        try:
            return os.path.realpath(os.fsdecode(path)).startswith(self.root)
        except (TypeError, ValueError):
            return False

    def record(self, path, event: str = "") -> None:
        if self.label is not None:
            relative = os.path.relpath(os.path.realpath(os.fsdecode(path)), self.root)
            self.writes.append((self.label, f"{event} {relative}".strip()))

    def labelled(self, label) -> list[str]:
        return [write for name, write in self.writes if name == label]

    def hook(self, event, args) -> None:
        if event == "os.mkdir" and args and self.below(args[0]) and os.path.isdir(os.fsdecode(args[0])):
            return  # mkdir(exist_ok=True) of an existing folder writes nothing
        if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)) and self.below(args[0]):
            mode, flags = args[1], args[2] if len(args) > 2 else 0
            if (mode and any(c in mode for c in "wax+")) or (
                    isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)):
                self.record(args[0])
        elif event in _EVENTS and args:
            target = args[-1] if event in ("os.rename", "os.replace") else args[0]
            if self.below(target):
                self.record(target, event)

    def wrap_native_writers(self) -> None:
        import safetensors.torch
        import torch

        for module, name in ((torch, "save"), (safetensors.torch, "save_file")):
            def wrapped(obj, f, *args, _original=getattr(module, name), **kwargs):
                if isinstance(f, (str, os.PathLike)) and self.below(f):
                    self.record(f)
                return _original(obj, f, *args, **kwargs)
            setattr(module, name, wrapped)

    def install(self) -> "WriteAudit":
        self.wrap_native_writers()
        sys.addaudithook(self.hook)  # cannot be removed: one audit per process
        return self
