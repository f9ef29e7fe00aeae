"""Imported once, by the fork server of an `hftl tune` worker (`hftl.tune.trial_process`), before it forks the
first trial: what every trial's `hftl train` imports, so that a forked trial starts without paying for it again.

Imports only. No torch operation, no thread of Python's, no CUDA: a process is forked from this one per trial, and
those must not find a lock held or a device context they cannot use (`trial_process.server_problem` checks it).
"""

import datasets  # noqa: F401
import evaluate  # noqa: F401
import peft  # noqa: F401
import torch  # noqa: F401
import transformers  # noqa: F401
from transformers import Trainer, TrainingArguments  # noqa: F401  (transformers resolves these lazily)

import hftl.cli  # noqa: F401
import hftl.runner  # noqa: F401
import hftl.trainer  # noqa: F401
import hftl.tune.report  # noqa: F401
import hftl.tune.trial_process  # noqa: F401
from hftl.tasks import registered_tasks

registered_tasks()  # imports every registered task's module, as `hftl train` does when it builds its parser
