"""The last encoder layer computed at position 0 only (`speed.first_token_last_layer`).

The sequence classifiers of BERT, RoBERTa (XLM-R, CamemBERT), ELECTRA and DistilBERT read the last
layer's output at position 0 alone (BERT's pooler `hidden_states[:, 0]`, the RoBERTa / ELECTRA heads
`features[:, 0, :]`, DistilBERT `hidden_state[:, 0]`). In that layer the keys and values still need
every token, but the query projection, the attention output, the feed-forward and the layer norms only
need that one position: for a 6-layer model ~14% fewer FLOPs, with the same logits and gradients.

The patch replaces the `forward` of one layer *instance* (nothing global); the model's
`last_hidden_state` then has length 1, which is all the classification head reads. At call time the
layer runs its stock forward in evaluation (so the metrics a run reports are exactly what `hftl evaluate` of
its saved model gives later, to the last bit, where decision thresholds sit on observed probabilities) unless
inside `first_token_in_eval` (prediction, whose batches differ from the Trainer's anyway), and whenever
something else may look at its output: hidden states or attentions requested, a cache, cross-attention,
padding-free (flattened) batches, or an attention implementation or mask this module was not checked with.

Relies on (checked with transformers 5.24): the layer classes' attribute names (`attention.self.query /
key / value / scaling / dropout`, `attention.output`, `feed_forward_chunk` for BERT-like layers;
`attention.q_lin / k_lin / v_lin / out_lin`, `sa_layer_norm`, `ffn`, `output_layer_norm` for
DistilBERT's `TransformerBlock`), each modeling module's `eager_attention_forward`, 4-D eager / SDPA
masks of shape (batch, 1, query, key), and the output collector of `transformers.utils.output_capturing`, the
only way a layer can tell that hidden states are being collected (`hftl.speed.private_hooks`,
"output_collector"). Anything missing: `use_first_token_last_layer` returns False and leaves the model
untouched; a patched layer that cannot read the collector at call time runs its stock forward.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import types

from hftl.speed import private_hooks

logger = logging.getLogger(__name__)

# exact classifier class -> (base model attribute, path from the base model to its layer list, layer kind)
_CLASSIFIERS = {
    "BertForSequenceClassification": ("bert", "encoder.layer", "bert"),
    "RobertaForSequenceClassification": ("roberta", "encoder.layer", "bert"),
    "XLMRobertaForSequenceClassification": ("roberta", "encoder.layer", "bert"),
    "CamembertForSequenceClassification": ("roberta", "encoder.layer", "bert"),
    "ElectraForSequenceClassification": ("electra", "encoder.layer", "bert"),
    "DistilBertForSequenceClassification": ("distilbert", "transformer.layer", "distilbert"),
}
_CHECKED_ATTENTION = {"eager", "sdpa", "sdpa_cheap_dropout"}  # the last from `hftl.speed.cheap_dropout`
_MARK = "_hftl_first_token_last_layer"
_IN_EVAL = "_hftl_first_token_in_eval"  # set by `first_token_in_eval` only


def use_first_token_last_layer(model) -> bool:
    """Compute `model`'s last encoder layer at position 0 only; returns whether the model was changed.

    Args:
        model (`PreTrainedModel` or `PeftModel`): a sequence classifier, possibly wrapped by peft.

    Returns:
        `bool`: False, with the model untouched, for an architecture not listed in `_CLASSIFIERS`, a model
        configured to output hidden states or attentions, or a layer whose structure differs from the one
        this module was written against. `del layer.forward` on the last layer undoes the change.
    """
    found = _last_layer(model)
    if found is not None:
        _install(*found)
    return found is not None


@contextlib.contextmanager
def first_token_in_eval(model):
    """Inside: `model`'s last layer runs at position 0 only in evaluation mode too, where the architecture allows
    (yields whether it does); on leaving, the model is as it was. For prediction, which reads the logits alone
    and whose length-sorted batches differ from the Trainer's anyway; evaluation inside training keeps the stock
    forward (see the module docstring)."""
    found = _last_layer(model)
    if found is None:
        yield False
        return
    layer, kind = found
    installed_here = not getattr(layer, _MARK, False)
    _install(layer, kind)
    setattr(layer, _IN_EVAL, True)
    try:
        yield True
    finally:  # pop, not del: another thread predicting with the same model may have cleaned up first
        vars(layer).pop(_IN_EVAL, None)
        if installed_here:
            vars(layer).pop("forward", None)
            vars(layer).pop(_MARK, None)


def _install(layer, kind: str) -> None:
    """Give `layer` (an instance) the position-0 forward of its kind, once."""
    if not getattr(layer, _MARK, False):
        layer.forward = types.MethodType(_bert_like_forward if kind == "bert" else _distilbert_forward, layer)
        setattr(layer, _MARK, True)


def _last_layer(model):
    """(the last encoder layer, its kind) where the shortcut applies to `model`, else None."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft wrappers
    spec = _CLASSIFIERS.get(type(inner).__name__)
    config = getattr(inner, "config", None)
    if spec is None or config is None or not private_hooks.available("output_collector"):
        return None
    if getattr(config, "output_hidden_states", False) or getattr(config, "output_attentions", False):
        return None
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        return None
    base_attr, layers_path, kind = spec
    layers = getattr(inner, base_attr, None)
    for name in layers_path.split("."):
        layers = getattr(layers, name, None)
    if not layers or not hasattr(layers, "__getitem__"):
        return None
    layer = layers[-1]
    if not getattr(layer, _MARK, False) and not _structure_ok(layer, kind):
        logger.info("first_token_last_layer: %s's last layer is not laid out as expected; left as is",
                    type(inner).__name__)
        return None
    return layer, kind


def _shortcut_wanted(layer) -> bool:
    """In training, or in evaluation inside `first_token_in_eval`."""
    return layer.training or getattr(layer, _IN_EVAL, False)


def _structure_ok(layer, kind: str) -> bool:
    attention = getattr(layer, "attention", None)
    if kind == "bert":
        names = [(attention, ("self", "output")), (getattr(attention, "self", None),
                 ("query", "key", "value", "scaling", "dropout", "attention_head_size", "config")),
                 (layer, ("feed_forward_chunk",))]
        if getattr(layer, "is_decoder", True) or getattr(attention, "is_cross_attention", True):
            return False
        self_attention = getattr(attention, "self", None)
    else:
        names = [(attention, ("q_lin", "k_lin", "v_lin", "out_lin", "scaling", "dropout", "attention_head_size",
                              "config")), (layer, ("sa_layer_norm", "ffn", "output_layer_norm"))]
        self_attention = attention
    if not all(owner is not None and hasattr(owner, name) for owner, wanted in names for name in wanted):
        return False
    return getattr(sys.modules.get(type(self_attention).__module__), "eager_attention_forward", None) is not None


def _outputs_requested(config, kwargs) -> bool:
    """True if the caller asked for hidden states / attentions (which must cover every position)."""
    if kwargs.get("output_hidden_states") or kwargs.get("output_attentions"):
        return True
    if getattr(config, "output_hidden_states", False) or getattr(config, "output_attentions", False):
        return True
    try:  # transformers 5.24's capture_outputs collects through this context variable (private)
        from transformers.utils.output_capturing import _active_collector

        return bool(_active_collector.get())
    except (ImportError, AttributeError):
        return True  # cannot tell: as if requested, so the layer computes every position


def _first_query_mask(attention_mask):
    """The attention mask for query position 0, or False where this module does not know the mask's form."""
    import torch

    if attention_mask is None:
        return None
    if not isinstance(attention_mask, torch.Tensor) or attention_mask.dim() != 4:
        return False  # flash attention's 2-D padding masks, flex attention's BlockMask: not checked here
    return attention_mask[:, :, :1] if attention_mask.shape[2] > 1 else attention_mask


def _usable(self_attention, attention_mask, kwargs):
    """The query-0 mask if the shortcut applies to this call, else False."""
    config = self_attention.config
    if config._attn_implementation not in _CHECKED_ATTENTION or _outputs_requested(config, kwargs):
        return False
    if kwargs.get("cu_seq_lens_q") is not None:  # padding-free batches: position 0 is one sequence's only
        return False
    return _first_query_mask(attention_mask)


def _attend(self_attention, query_states, hidden_states, key_module, value_module, query_module, mask, kwargs):
    """Multi-head attention of position 0 over every position, through the layer's own modules."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    batch, length = hidden_states.shape[:2]
    head = self_attention.attention_head_size
    query = query_module(query_states).view(batch, 1, -1, head).transpose(1, 2)
    key = key_module(hidden_states).view(batch, length, -1, head).transpose(1, 2)
    value = value_module(hidden_states).view(batch, length, -1, head).transpose(1, 2)
    eager = sys.modules[type(self_attention).__module__].eager_attention_forward
    interface = ALL_ATTENTION_FUNCTIONS.get_interface(self_attention.config._attn_implementation, eager)
    output, _ = interface(self_attention, query, key, value, mask,
                          dropout=self_attention.dropout.p if self_attention.training else 0.0,
                          scaling=self_attention.scaling, **kwargs)
    return output.reshape(batch, 1, -1).contiguous()


def _bert_like_forward(self, hidden_states, attention_mask=None, encoder_hidden_states=None,
                       encoder_attention_mask=None, cache=None, **kwargs):
    """`BertLayer.forward` (and its RoBERTa / ELECTRA copies) returning position 0 only."""
    self_attention = self.attention.self
    mask = False if cache is not None or encoder_hidden_states is not None or not _shortcut_wanted(self) else \
        _usable(self_attention, attention_mask, kwargs)
    if mask is False:
        return type(self).forward(self, hidden_states, attention_mask, encoder_hidden_states,
                                  encoder_attention_mask=encoder_attention_mask, cache=cache, **kwargs)
    first = hidden_states[:, :1]
    attended = _attend(self_attention, first, hidden_states, self_attention.key, self_attention.value,
                       self_attention.query, mask, kwargs)
    attention_output = self.attention.output(attended, first)  # dense, dropout, LayerNorm(+ residual)
    # feed-forward without apply_chunking_to_forward: chunking along one position changes nothing
    return self.feed_forward_chunk(attention_output)


def _distilbert_forward(self, hidden_states, attention_mask=None, **kwargs):
    """DistilBERT's `TransformerBlock.forward` returning position 0 only."""
    attention = self.attention
    mask = _usable(attention, attention_mask, kwargs) if _shortcut_wanted(self) else False
    if mask is False:
        return type(self).forward(self, hidden_states, attention_mask, **kwargs)
    first = hidden_states[:, :1]
    attended = _attend(attention, first, hidden_states, attention.k_lin, attention.v_lin, attention.q_lin, mask,
                       kwargs)
    attention_output = self.sa_layer_norm(attention.out_lin(attended) + first)
    return self.output_layer_norm(self.ffn(attention_output) + attention_output)
