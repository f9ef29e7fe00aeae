"""The precision a run's figures are computed in (`hftl.precision.evaluation_precision`): float32 beside
half-precision training where it can be had, the training's own precision (said in the log) where it cannot.
A whole run at the default precision is the conformance matrix's P cell (tests/test_conformance.py); accelerate
changed under it, tests/test_private_hooks.py."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from hftl.precision import BFLOAT16, FLOAT16, FLOAT32, evaluation_precision


def trainer(bf16=False, fp16=False, fsdp=False, deepspeed=False):
    return SimpleNamespace(args=SimpleNamespace(bf16=bf16, fp16=fp16), accelerator=SimpleNamespace(native_amp=True),
                           is_fsdp_enabled=fsdp, is_deepspeed_enabled=deepspeed)


@pytest.mark.parametrize("wanted", [FLOAT32, BFLOAT16])
def test_float32_training_evaluates_in_float32_whatever_is_asked(wanted):
    assert evaluation_precision(trainer(), wanted) == FLOAT32


def test_half_precision_training_evaluates_as_asked():
    assert evaluation_precision(trainer(bf16=True), FLOAT32) == FLOAT32
    assert evaluation_precision(trainer(bf16=True), BFLOAT16) == BFLOAT16
    assert evaluation_precision(trainer(fp16=True), FLOAT32) == FLOAT32


@pytest.mark.parametrize("where, half", [({"fsdp": True, "bf16": True}, BFLOAT16),
                                         ({"deepspeed": True, "fp16": True}, FLOAT16)])
def test_where_float32_cannot_be_had_the_training_precision_is_used_and_said(where, half, caplog):
    with caplog.at_level(logging.INFO, logger="hftl.precision"):
        assert evaluation_precision(trainer(**where), FLOAT32) == half
    assert half in caplog.text
