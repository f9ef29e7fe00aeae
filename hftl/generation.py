"""Text generation from a causal-LM model: a quick look at what a fine-tuned model writes."""

from __future__ import annotations


def generate(model, tokenizer, prompt: str, max_new_tokens: int = 50, sample: bool = False, seed: int | None = None,
             temperature: float = 1.0, top_p: float = 0.95, repetition_penalty: float = 1.0) -> str:
    """The continuation of `prompt` (without the prompt).

    Args:
        model (`PreTrainedModel`): a causal-LM model (a `hftl.load(run_dir).model`).
        tokenizer (`PreTrainedTokenizerBase`): its tokenizer.
        prompt (`str`): the text to continue.
        max_new_tokens (`int`, *optional*, defaults to 50): the most tokens to add.
        sample (`bool`, *optional*, defaults to `False`): sample (temperature, top-p) instead of greedy decoding.
        seed (`int`, *optional*): seed for sampling, so the same call gives the same text.
        repetition_penalty (`float`, *optional*, defaults to 1.0): above 1, tokens already in the continuation
            (not the prompt) are made less likely (`hftl.chat.reply_penalty`).
    """
    import torch
    from transformers import set_seed

    from hftl.chat import reply_penalty

    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}.")
    inputs = tokenizer(prompt, return_tensors="pt").to(model.device)
    options = {"do_sample": sample, "max_new_tokens": max_new_tokens, "pad_token_id": tokenizer.pad_token_id,
               "logits_processor": reply_penalty(repetition_penalty, inputs["input_ids"].shape[1])}
    if sample:
        options.update(temperature=temperature, top_p=top_p, top_k=0)
        if seed is not None:
            set_seed(seed)
    else:
        # The checkpoint's generation_config may ask for sampling; greedy means greedy.
        options.update(temperature=None, top_p=None, top_k=None)
    model.eval()
    with torch.inference_mode():
        output = model.generate(**inputs, **options)
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
