"""The one gate between a name the browser sends and a file: everything stays inside the UI's root.

A relative name is resolved against the root with every symlink followed, and refused if the result leaves the
root (`../../etc/passwd`, an absolute path elsewhere, a symlink to outside). The UI reads and writes files only
through `RootPaths`, and hands Gradio no folder to serve (no `allowed_paths`).
"""

from __future__ import annotations

import os
from pathlib import Path

from hftl.errors import HftlError


class PathRefused(HftlError):
    """A path that would leave the UI's root."""


class RootPaths:
    """Paths confined to `root`.

    Args:
        root (`str` or `Path`): the runs folder the UI shows (created if missing).
    """

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()

    def resolve(self, name: str | Path, must_exist: bool = False) -> Path:
        """The real path of `name` (relative to the root, or absolute inside it); `PathRefused` if it leaves it."""
        text = str(name).strip()
        if not text or "\x00" in text:
            raise PathRefused(f"{text!r}: not a path inside the runs folder.")
        candidate = Path(text).expanduser()
        real = Path(os.path.realpath(candidate if candidate.is_absolute() else self.root / candidate))
        if real != self.root and self.root not in real.parents:
            raise PathRefused(f"{text}: refused, it is outside the runs folder {self.root} "
                              "(the UI reads and writes only inside --root; symlinks that lead out count as outside).")
        if must_exist and not real.exists():
            raise PathRefused(f"{text}: no such file or folder in the runs folder.")
        return real

    def relative(self, path: str | Path) -> str:
        """`path` (inside the root) as the UI names it: relative to the root, '.' for the root itself."""
        return Path(os.path.relpath(self.resolve(path), self.root)).as_posix()

    def read_text(self, name: str | Path, limit: int = 200_000) -> str:
        """The text of a file inside the root (the first `limit` characters)."""
        path = self.resolve(name, must_exist=True)
        if not path.is_file():
            raise PathRefused(f"{name}: not a file.")
        with path.open("r", encoding="utf-8", errors="replace") as handle:
            text = handle.read(limit + 1)
        return text if len(text) <= limit else text[:limit] + f"\n... (cut at {limit} characters)"

    def read_bytes(self, name: str | Path, limit: int = 20_000_000) -> bytes:
        path = self.resolve(name, must_exist=True)
        if not path.is_file() or path.stat().st_size > limit:
            raise PathRefused(f"{name}: not a file, or larger than {limit} bytes.")
        return path.read_bytes()
