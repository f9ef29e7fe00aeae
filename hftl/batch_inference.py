"""Fast, streaming prediction for text classifiers: length-sorted batches sized by a token budget.

Inputs are consumed in chunks of `chunk_size`: each chunk is tokenised once (batched, no padding), sorted by
length, cut into batches whose padded size (rows x longest row) stays within `token_budget`, run, and put
back in input order before it is yielded. Sorting removes most padding (short and long texts no longer
share a batch) and the budget makes batches of short texts wide and batches of long texts narrow, so every
forward pass does about the same work. Only one chunk is in memory at a time, so a file of millions of
lines streams through.

The same path serves a PyTorch model (`uncalibrated_probabilities`) and an ONNX Runtime session
(`hftl.onnx_export.OnnxClassifier`): both are a `forward(arrays) -> logits` function here.
"""

from __future__ import annotations

import itertools
import logging
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

from hftl.errors import DataError

logger = logging.getLogger(__name__)

#: padded tokens per forward pass (rows x padded length) on a CPU: 16 rows of 128 tokens, or 170 of SST-2's median
#: 12. Small enough that a batch's activations stay near the caches: on a 2-core AMX Xeon 2048 ran 1.2-1.3x faster
#: than 8192 in float32 and bf16, on SST-2 and GoEmotions texts (docs/benchmarks.md, "Prediction throughput").
DEFAULT_TOKEN_BUDGET = 2048
#: the budget on a GPU or other accelerator, where wide batches keep the device busy (not measured on one yet)
ACCELERATOR_TOKEN_BUDGET = 8192
#: inputs read, tokenised and sorted together; larger chunks sort better but hold more in memory
DEFAULT_CHUNK_SIZE = 2048
#: a tokenizer's `model_max_length` above this is the "no limit" sentinel, not a real limit
_NO_LIMIT = 1_000_000

Forward = Callable[[dict], np.ndarray]
Text = str | tuple[str, str]


def chunked(items: Iterable, size: int) -> Iterator[list]:
    """Lists of `size` items (the last one shorter), pulling from `items` only as each list is needed."""
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _split_pairs(chunk: list, first_index: int) -> tuple[list[str], list[str] | None]:
    """(texts, text pairs or None) of a chunk, checking every item is a text or a (text, text) pair."""
    pairs = not isinstance(chunk[0], str)
    for offset, item in enumerate(chunk):
        ok = (isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(t, str) for t in item)
              if pairs else isinstance(item, str))
        if not ok:
            expected = "a (text, text_pair) pair like the first input" if pairs else "a text (str) like the first input"
            raise DataError(f"input {first_index + offset + 1}: expected {expected}, got {item!r:.80}. "
                            "Give all texts, or all sentence pairs.")
    if not pairs:
        return chunk, None
    return [item[0] for item in chunk], [item[1] for item in chunk]


def encode_chunk(tokenizer, chunk: list, max_length: int, first_index: int = 0) -> dict[str, list[list[int]]]:
    """Token ids (and masks) of a chunk of texts or pairs: truncated to `max_length`, not padded."""
    texts, pairs = _split_pairs(chunk, first_index)
    return dict(tokenizer(texts, pairs, truncation=True, max_length=max_length, padding=False))


def _padded(length: int, multiple: int | None) -> int:
    return -(-length // multiple) * multiple if multiple else length


def plan_batches(lengths: Sequence[int], token_budget: int, pad_to_multiple_of: int | None = None) -> list[list[int]]:
    """Row indices of each batch: longest rows first, each batch at most `token_budget` padded tokens.

    A row longer than the budget on its own makes a batch of one (the budget cannot be kept for it).

    Args:
        lengths (`Sequence[int]`): the token count of each row.
        token_budget (`int`): the most rows x padded length per batch.
        pad_to_multiple_of (`int`, *optional*): the padded length is rounded up to a multiple of this.
    """
    if token_budget < 1:
        raise ValueError(f"token_budget must be at least 1, got {token_budget}.")
    # Longest first: the biggest batch runs first, so running out of memory shows at once, not at the end.
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, current, width = [], [], 0
    for index in order:
        if not current:
            width = _padded(lengths[index], pad_to_multiple_of)
        elif (len(current) + 1) * width > token_budget:
            batches.append(current)
            current, width = [], _padded(lengths[index], pad_to_multiple_of)
        current.append(index)
    if current:
        batches.append(current)
    return batches


def pad_batch(encoded: dict[str, list[list[int]]], rows: list[int], pad_values: dict[str, int],
              padding_side: str = "right", pad_to_multiple_of: int | None = None) -> dict[str, np.ndarray]:
    """int64 arrays of the given rows, padded to their longest row (`pad_values[name]`, else 0)."""
    lengths = [len(encoded["input_ids"][row]) for row in rows]
    width = _padded(max(max(lengths), 1), pad_to_multiple_of)  # an empty text without special tokens has 0
    arrays = {}
    for name, values in encoded.items():
        array = np.full((len(rows), width), pad_values.get(name, 0), dtype=np.int64)
        for i, (row, length) in enumerate(zip(rows, lengths)):
            if padding_side == "left":
                array[i, width - length:] = values[row]
            else:
                array[i, :length] = values[row]
        arrays[name] = array
    return arrays


def tokenizer_pad_values(tokenizer) -> dict[str, int]:
    """What each tokenizer output is padded with (the pad token id, the pad token type id, 0 for masks)."""
    if tokenizer.pad_token_id is None:
        raise DataError("the tokenizer has no pad token, so texts of different lengths cannot share a batch. "
                        "Set one (e.g. tokenizer.pad_token = tokenizer.eos_token, as hftl's training does).")
    return {"input_ids": tokenizer.pad_token_id, "token_type_ids": getattr(tokenizer, "pad_token_type_id", 0),
            "attention_mask": 0}


def resolve_max_length(tokenizer, max_length: int | None) -> int:
    """`max_length`, else the tokenizer's own limit (512 when it declares none)."""
    if max_length:
        return max_length
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if limit and limit < _NO_LIMIT else 512


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def run_batched(forward: Forward, tokenizer, texts: Iterable[Text], *, max_length: int | None = None,
                token_budget: int = DEFAULT_TOKEN_BUDGET, chunk_size: int = DEFAULT_CHUNK_SIZE,
                pad_to_multiple_of: int | None = None, progress: bool = True,
                total: int | None = None, encode: Callable | None = None) -> Iterator[tuple[list, np.ndarray]]:
    """(inputs, float32 logits) chunk by chunk, in input order, from any `forward(arrays) -> logits`.

    The batching path shared by the PyTorch and ONNX Runtime back ends; see `uncalibrated_probabilities` for the
    other arguments. `encode(tokenizer, chunk, max_length, first_index)` turns a chunk of inputs into unpadded
    token ids and masks (default `encode_chunk`: texts or pairs; token classification gives its encoded windows).
    Logits per position (a token classifier's) are right-padded with zeros to the chunk's longest row.
    """
    from tqdm.auto import tqdm

    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}.")
    max_length = resolve_max_length(tokenizer, max_length)
    pad_values = tokenizer_pad_values(tokenizer)
    side = getattr(tokenizer, "padding_side", "right")
    encode = encode or encode_chunk
    if total is None and hasattr(texts, "__len__"):
        total = len(texts)
    seen = 0
    with tqdm(total=total, unit="text", desc="Predicting", file=sys.stderr, disable=None if progress else True) as bar:
        for chunk in chunked(texts, chunk_size):
            encoded = encode(tokenizer, chunk, max_length, first_index=seen)
            lengths = [len(ids) for ids in encoded["input_ids"]]
            logits = None
            for rows in plan_batches(lengths, token_budget, pad_to_multiple_of):
                out = forward(pad_batch(encoded, rows, pad_values, side, pad_to_multiple_of))
                per_position = out.ndim > 2
                if per_position and side == "left":
                    raise ValueError("logits per position need right padding (tokenizer.padding_side = 'right').")
                if logits is None:
                    width = (_padded(max(lengths), pad_to_multiple_of),) if per_position else ()
                    logits = np.zeros((len(chunk), *width, *out.shape[1 + per_position:]), dtype=np.float32)
                if per_position:
                    logits[rows, :out.shape[1]] = out  # back to input order, zeros past each row's batch
                else:
                    logits[rows] = out  # back to input order
                bar.update(len(rows))
            seen += len(chunk)
            yield chunk, logits


def default_token_budget(device_type: str) -> int:
    """The token budget for a device type ("cpu", "cuda", ...) when the caller gives none."""
    return DEFAULT_TOKEN_BUDGET if device_type == "cpu" else ACCELERATOR_TOKEN_BUDGET


def bf16_autocast(model, bf16: str | bool = "auto") -> bool:
    """Whether to run `model` under bfloat16 autocast: `bf16` True/False, or "auto" (hftl's rule for training:
    where the hardware runs bf16 natively, see `hftl.trainer.bf16_is_fast`, and the model is in float32)."""
    import torch

    from hftl.trainer import bf16_is_fast

    if bf16 != "auto":
        return bool(bf16)
    return next(model.parameters()).dtype == torch.float32 and bf16_is_fast()


def model_forward(model, bf16: str | bool = "auto", first_token_last_layer: bool = False) -> tuple[Forward, str]:
    """(`forward(arrays) -> float32 logits`, device type) of a transformers (or peft) model (see `torch_forward`),
    or of an ONNX Runtime model (`hftl.onnx_export.OnnxClassifier`, its own forward, run where its session is)."""
    import torch

    if isinstance(model, torch.nn.Module):
        return torch_forward(model, bf16, first_token_last_layer), next(model.parameters()).device.type
    return model.forward, model.device_type


def torch_forward(model, bf16: str | bool = "auto", first_token_last_layer: bool = False) -> Forward:
    """`forward(arrays) -> float32 logits` of a transformers model, under `torch.inference_mode()`; with
    `first_token_last_layer`, a sequence classifier's last layer computed at position 0 only where the
    architecture allows (`hftl.speed.first_token_last_layer.first_token_in_eval`: same logits within float32
    rounding, the model left as it was after each call)."""
    import contextlib

    import torch

    from hftl.speed.first_token_last_layer import first_token_in_eval

    model.eval()  # dropout off: predictions must not depend on the model's last use
    device = next(model.parameters()).device
    autocast = bf16_autocast(model, bf16)
    logger.info("predicting on %s with bf16 autocast %s", device, "on" if autocast else "off")

    def forward(arrays: dict) -> np.ndarray:
        batch = {name: torch.from_numpy(array).to(device) for name, array in arrays.items()}
        shortcut = first_token_in_eval(model) if first_token_last_layer else contextlib.nullcontext()
        with shortcut, torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            return model(**batch).logits.float().cpu().numpy()

    return forward


def uncalibrated_probabilities(model, tokenizer, texts: Iterable[Text], *, max_length: int | None = None,
                               token_budget: int | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE,
                               bf16: str | bool = "auto", pad_to_multiple_of: int | None = None,
                               progress: bool = True, total: int | None = None, return_logits: bool = False,
                               first_token_last_layer: bool = True) -> Iterator[tuple[list, np.ndarray]]:
    """Class probabilities of texts (or sentence pairs), streamed chunk by chunk in input order: the softmax of
    the model's raw logits, uncalibrated (a run's temperature and thresholds, `hftl.decisions.Decisions`, are
    applied by `hftl.load(run).predict`).

    Args:
        model (`PreTrainedModel`, `PeftModel` or `OnnxClassifier`): a sequence classifier (put in eval mode here),
            or an ONNX export of one.
        tokenizer (`PreTrainedTokenizerFast`): its tokenizer, with a pad token.
        texts (`Iterable[str]` or `Iterable[tuple[str, str]]`): texts, or (text, text_pair) pairs; a generator
            is read lazily, `chunk_size` items at a time.
        max_length (`int`, *optional*): truncate inputs to this many tokens (default: the tokenizer's limit).
        token_budget (`int`, *optional*): the most rows x padded length per forward pass (default: 2048 on a
            CPU, 8192 on an accelerator; see `default_token_budget`).
        chunk_size (`int`, *optional*, defaults to 2048): inputs read, sorted and yielded together.
        bf16 (`"auto"` or `bool`, *optional*, defaults to `"auto"`): bfloat16 autocast; "auto" turns it on
            where the hardware is fast at it (the rule of `speed.bf16: auto`). Use False for exact float32.
        pad_to_multiple_of (`int`, *optional*): round padded lengths up (e.g. 8 for GPU tensor cores).
        progress (`bool`, *optional*, defaults to `True`): a tqdm bar on stderr (hidden when not a terminal).
        total (`int`, *optional*): the number of inputs, for the bar, when `texts` has no `len()`.
        return_logits (`bool`, *optional*, defaults to `False`): yield logits instead of probabilities.
        first_token_last_layer (`bool`, *optional*, defaults to `True`): compute the last layer at the pooled
            position only where the architecture is known to pool position 0 (BERT, RoBERTa, ELECTRA,
            DistilBERT; ~14% fewer FLOPs for 6 layers, same logits within float32 rounding).

    Yields:
        `(inputs, scores)`: a list of up to `chunk_size` inputs and a float32 array of shape (len(inputs),
        num_labels) whose row i belongs to inputs[i].
    """
    forward, device_type = model_forward(model, bf16, first_token_last_layer)
    token_budget = token_budget or default_token_budget(device_type)
    for chunk, logits in run_batched(forward, tokenizer, texts, max_length=max_length, token_budget=token_budget,
                                     chunk_size=chunk_size, pad_to_multiple_of=pad_to_multiple_of,
                                     progress=progress, total=total):
        yield chunk, logits if return_logits else softmax(logits)
