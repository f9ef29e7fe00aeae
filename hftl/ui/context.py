"""What every page shares: the root (and its path gate), the job queue, the runs list, and loaded runs for Try."""

from __future__ import annotations

import base64
import logging
import re
import threading
from collections import OrderedDict
from pathlib import Path

from hftl.errors import HftlError
from hftl.ui.jobs import JOB_NICENESS, JobQueue, redact
from hftl.ui.paths import RootPaths
from hftl.ui.runs_index import FINISHED, RunSummary, scan_runs

logger = logging.getLogger(__name__)

#: finished runs kept loaded for Try (each holds a model in memory)
LOADED_RUNS = 2
_IMAGE_LINK = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")


class UIContext:
    """The state of one `hftl ui` process.

    Args:
        root (`str` or `Path`): the runs folder.
        job_niceness (`int`): how much lower than the UI's the training jobs' CPU priority is.
    """

    def __init__(self, root: str | Path, job_niceness: int = JOB_NICENESS):
        self.paths = RootPaths(root)
        self.paths.root.mkdir(parents=True, exist_ok=True)
        self.root = self.paths.root
        self.jobs = JobQueue(self.root, job_niceness)
        self._loaded: OrderedDict[str, object] = OrderedDict()
        self._load_lock = threading.Lock()

    def runs(self) -> list[RunSummary]:
        return scan_runs(self.root, self.jobs.running_dirs())

    def run_ids(self, finished_only: bool = False) -> list[str]:
        """Run folders (relative to the root) for the pages' pickers; seed groups list their seeds too."""
        ids = []
        for row in self.runs():
            if row.members:
                ids += [row.id] if not finished_only else []
                ids += [m for m in row.members]
            elif not finished_only or row.status == FINISHED:
                ids.append(row.id)
        return ids

    def run_folder(self, run_id: str) -> Path:
        """The folder of run `run_id` (relative to the root); `PathRefused` outside the root."""
        return self.paths.resolve(run_id, must_exist=True)

    def loaded_run(self, run_id: str):
        """`hftl.load(run)` of a finished run, as `hftl predict` loads it (remote code and pickle off), cached."""
        folder = self.run_folder(run_id)
        key = str(folder)
        with self._load_lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
            from hftl.inference import load

            loaded = load(folder, trust_remote_code=False, allow_pickle=False)
            self._loaded[key] = loaded
            while len(self._loaded) > LOADED_RUNS:
                self._loaded.popitem(last=False)
            return loaded

    def card_markdown(self, folder: Path) -> str:
        """The run's model card with its figures inlined (read through the root's gate; Gradio serves no file)."""
        text = self.paths.read_text(folder / "README.md")
        text = re.sub(r"\A---\n.*?\n---\n", "", text, flags=re.S)  # the Hub's YAML metadata block

        def inline(match: re.Match) -> str:
            alt, target = match.groups()
            if re.match(r"[a-z]+:", target):
                return match.group(0)
            try:
                data = self.paths.read_bytes(folder / target, limit=5_000_000)
            except HftlError:
                return f"*(figure {target} not available)*"
            kind = "png" if target.lower().endswith(".png") else "jpeg"
            return f"![{alt}](data:image/{kind};base64,{base64.b64encode(data).decode()})"

        return _IMAGE_LINK.sub(inline, text)


def message(err: Exception) -> str:
    """An error as the page shows it: one paragraph, tokens masked."""
    return redact(str(err))
