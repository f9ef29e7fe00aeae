"""Language modelling: causal-LM fine-tuning (GPT-style) and masked-LM domain-adaptive pretraining (BERT-style).

Both read raw text, tokenise it, join the documents (EOS, or the tokenizer's [CLS] ... [SEP] frame, between them)
and cut the stream into blocks of `block_size` tokens, as transformers' `run_clm.py` / `run_mlm.py` do
(`group_texts`); the last partial block of each 1,000 documents is dropped. Metrics are the evaluation loss
(a mean over predicted tokens) and its exponential:

- causal-lm: `perplexity` = exp(mean next-token cross-entropy).
- masked-lm: `pseudo_perplexity` = exp(mean cross-entropy over the masked tokens). This is *not* the
  leave-one-out pseudo-log-likelihood of Salazar et al.; evaluation blocks are masked once with a fixed seed,
  so scores before and after training (and across runs) see the same masks. Training blocks are masked afresh
  each epoch, each block from its own generator seeded by (training.seed, epoch, block position): a resumed
  run masks as the uninterrupted run did, and every process of a distributed run as one process would.

Strategies: `full`; `freeze` trains the LM head and the top `model.trainable_layers` blocks (the head is usually
tied to the input embeddings, which then train too); `lora` adapts the attention projections
(`hftl.strategies.resolve_lora_targets`: GPT-2 `c_attn`, Llama `q_proj`/`v_proj`, BERT `query`/`value`) and,
for LoRA runs, also saves the merged model in `<run>/merged/`, a plain safetensors checkpoint that loads with no
base model (no GGUF file) and that other recipes accept as `model.name_or_path`.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from itertools import chain

from hftl.config.parse import field
from hftl.config.schema import DataConfig
from hftl.data import fingerprint, load_split, load_splits
from hftl.data.columns import check_sources, check_text_column, require_source, split_sources
from hftl.epoch import example_seed
from hftl.errors import DataError
from hftl.modeling import check_length_limit, load_kwargs, load_pretrained_model, load_tokenizer, resolve_checkpoint
from hftl.recipe import PreparedData, Recipe, register_task
from hftl.run_dir import RunDir

logger = logging.getLogger(__name__)

_PACK_BATCH = 1000  # documents joined per `map` batch (run_clm's default); each batch drops its last partial block
#: the column of masked-LM training blocks' positions, which seed their masks (with the seed and the epoch)
EXAMPLE_INDEX = "example_index"


@dataclass
class CausalLMData(DataConfig):
    text_column: str = field("text", help="column with the raw text (.txt files: one document per line, column 'text')")
    block_size: int = field(
        128, help="tokens per training example: documents are joined (EOS between them) and cut into blocks this long"
    )
    baseline: bool = field(True, help="also evaluate the untouched checkpoint on validation and test before training")

    def check(self) -> list[str]:
        return [] if self.block_size >= 8 else [f"block_size: must be at least 8 tokens, got {self.block_size}."]


@dataclass
class MaskedLMData(CausalLMData):
    mlm_probability: float = field(0.15, help="share of tokens masked in each block (BERT used 0.15)")
    whole_word_masking: bool = field(False, help="mask every sub-token of a chosen word together (needs a fast tokenizer)")

    def check(self) -> list[str]:
        problems = super().check()
        if not 0.0 < self.mlm_probability < 1.0:
            problems.append(f"mlm_probability: must be between 0 and 1, got {self.mlm_probability}.")
        return problems


def perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 700 else float("inf")


class LanguageModelingRecipe(Recipe):
    """What causal and masked LM share: text loading, packing, loss/perplexity evaluation, merged LoRA saving
    (not a task itself: it registers nothing)."""

    auto_model_class: str = ""
    perplexity_key: str = "perplexity"
    #: the model shifts the labels itself (causal LMs: the label at t is the token at t+1)
    labels_are_shifted: bool = False
    input_column = "text_column"
    evaluation_batch_size = 16
    loss_is_token_mean = True  # transformers' LM losses are token sums divided by num_items_in_batch
    # The same vocabulary-sized logits make a 4x evaluation batch cost memory (+460 MB for SmolLM2 at
    # 4 x 128 tokens) and no time (docs/benchmarks.md): evaluate with the training batch.
    auto_eval_batch_size_factor = 1

    # -- config and data --------------------------------------------------------------------------
    @classmethod
    def check_config(cls, config, model_ok: bool) -> list[str]:
        problems = check_sources(config.data, {"text_column": config.data.text_column})
        if model_ok:
            problems += cls._check_model(config)
        return problems

    @classmethod
    def _check_model(cls, config) -> list[str]:
        """Checks that read the checkpoint's config or tokenizer (subclasses extend)."""
        return check_length_limit(config.model, "block_size", config.data.block_size)

    def load_data(self) -> PreparedData:
        data = self.config.data
        splits = load_splits(data, seed=self.config.seed)
        sources = split_sources(data)
        for name, dataset in splits.items():
            check_text_column(dataset, data.text_column, sources[name])
            splits[name] = dataset.select_columns([data.text_column])
        fingerprints = {name: fingerprint(src, splits.get(name)) for name, src in data.splits().items()}
        return PreparedData(splits, sources, fingerprints)

    def prepare_source(self, source: str, tokenizer, labels=None):
        data = self.config.data
        require_source(source, "--data", {"text_column": data.text_column}, data.column_names)
        dataset = load_split(source, data.dataset_config, split="test", column_names=data.column_names)
        check_text_column(dataset, data.text_column, source)
        return self._pack(dataset.select_columns([data.text_column]), tokenizer, "test", source)

    def load_processor(self):
        return load_tokenizer(self.config.model)

    def preprocess(self, data: PreparedData, tokenizer) -> dict:
        return {name: self._pack(ds, tokenizer, name, data.sources[name]) for name, ds in data.splits.items()}

    def _pack(self, dataset, tokenizer, name: str, source: str):
        """Tokenise the documents of one split (read from `source`) and join them into blocks of `block_size` tokens."""
        data = self.config.data
        block = data.block_size
        tokenized = dataset.map(lambda batch: self.tokenize(batch[data.text_column], tokenizer), batched=True,
                                remove_columns=dataset.column_names, desc=f"Tokenizing {name}")
        total = sum(len(ids) for ids in tokenized["input_ids"]) if len(tokenized) else 0
        if total == 0:
            raise DataError(f"data.{name}: {source} holds no text in column '{data.text_column}' (every row is empty).")
        if total < block:
            raise DataError(
                f"data.{name}: {source} holds {total} tokens in all, fewer than one block of data.block_size={block}. "
                f"Add text, or lower data.block_size (at most {total})."
            )

        def group_texts(batch):
            joined = {key: list(chain(*batch[key])) for key in batch}
            usable = len(joined["input_ids"]) // block * block
            return {key: [values[i:i + block] for i in range(0, usable, block)] for key, values in joined.items()}

        packed = tokenized.map(group_texts, batched=True, batch_size=_PACK_BATCH, desc=f"Packing {name} into blocks of {block}")
        if len(packed) == 0:
            raise DataError(f"data.{name}: {source} gave no full block of {block} tokens. Lower data.block_size.")
        return self.finish_blocks(packed, tokenizer, name)

    def tokenize(self, texts, tokenizer) -> dict:
        raise NotImplementedError

    def finish_blocks(self, packed, tokenizer, name: str):
        return packed

    def training_defaults(self) -> dict:
        # Blocks all have the same length (nothing to group), and evaluation needs only the loss: gathering
        # vocabulary-sized logits for every token would take gigabytes.
        return {"train_sampling_strategy": "random", "prediction_loss_only": True}

    # -- model ------------------------------------------------------------------------------------
    def load_model(self, tokenizer, labels=None):
        import transformers

        model, new = load_pretrained_model(getattr(transformers, self.auto_model_class), self.config.model)
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(tokenizer))
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        return model, new

    def head_module_names(self, model, newly_initialised) -> list[str]:
        if self.config.model.strategy != "lora":
            return super().head_module_names(model, newly_initialised)
        # The LM head is tied to the input embeddings (vocabulary x hidden): LoRA leaves it alone, and trains
        # in full only the leaf modules the checkpoint lacked (e.g. the MLM transform of a sentence encoder).
        modules = dict(model.named_modules())
        parents = {key.rsplit(".", 1)[0] for key in newly_initialised}
        return sorted(p for p in parents if p in modules and not any(True for _ in modules[p].children()))

    # -- evaluation -------------------------------------------------------------------------------
    def evaluate_split(self, trainer, name: str, dataset, labels=None) -> dict:
        """The mean cross-entropy over every predicted token of the split, and its exponential.

        Token-weighted whatever the evaluation batch: the Trainer's `eval_loss` averages batch means, which for
        masked-LM (a different number of masked tokens per batch) depends on the batch size. Each example's loss
        sum and token count come back through `preprocess_logits_for_metrics` (vocabulary-sized logits are
        never gathered) and are gathered exactly, also under distributed evaluation.
        """
        loss, _ = self.token_loss_sums(trainer, dataset)
        return {"loss": loss, self.perplexity_key: perplexity(loss), "blocks": len(dataset),
                "tokens": len(dataset) * self.config.data.block_size}

    def token_loss_sums(self, trainer, dataset) -> tuple[float, float]:
        """(mean cross-entropy over every labelled token of `dataset`, the number of those tokens), token-weighted
        whatever the evaluation batch: each example's loss sum and token count come back through
        `preprocess_logits_for_metrics`, so vocabulary-sized logits are never gathered."""
        import torch

        shift = self.labels_are_shifted

        def loss_sums(logits, labels):
            logits = logits[0] if isinstance(logits, tuple) else logits
            if shift:  # causal LMs predict token t+1 at position t
                logits, labels = logits[:, :-1], labels[:, 1:]
            losses = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(),
                                                       ignore_index=-100, reduction="none").view(labels.shape)
            return torch.stack([losses.sum(-1), (labels != -100).sum(-1).float()], dim=-1)

        saved = trainer.args.prediction_loss_only, trainer.preprocess_logits_for_metrics
        trainer.args.prediction_loss_only, trainer.preprocess_logits_for_metrics = False, loss_sums
        try:
            sums = trainer.predict(dataset).predictions
        finally:
            trainer.args.prediction_loss_only, trainer.preprocess_logits_for_metrics = saved
        tokens = float(sums[:, 1].sum())
        return float(sums[:, 0].sum() / max(tokens, 1.0)), tokens

    def evaluate_before(self, trainer, datasets: dict, labels=None) -> dict:
        if not self.config.data.baseline or self.config.resume:
            return {}
        return {split: self.evaluate_split(trainer, split, datasets[split]) for split in ("validation", "test")
                if split in datasets}

    def save_extras(self, run: RunDir, trainer, tokenizer, labels=None) -> None:
        """LoRA runs: also save the merged model, a plain checkpoint that needs neither peft nor the base files."""
        import copy

        if self.config.model.strategy != "lora":
            return
        if getattr(trainer, "is_fsdp_enabled", False):
            # FSDP's sharded parameters cannot be deep-copied: merge the adapter just saved into a fresh base model
            from peft import PeftModel

            from hftl.modeling import quiet_load_report

            with quiet_load_report():  # the base's newly initialised weights come from the adapter
                base, _ = self.load_model(tokenizer)
            merged = PeftModel.from_pretrained(base, run.path).merge_and_unload()
        else:
            merged = copy.deepcopy(trainer.accelerator.unwrap_model(trainer.model)).merge_and_unload()
        merged.save_pretrained(run.merged_dir)
        tokenizer.save_pretrained(run.merged_dir)


def _documents(texts) -> list[str]:
    """Non-empty documents (blank lines of a .txt file and empty cells are skipped)."""
    return [t for t in texts if isinstance(t, str) and t.strip()]


class CausalLMRecipe(LanguageModelingRecipe):
    """Fine-tune a GPT-style decoder on raw text (next-token prediction).

    Example:
        ```python
        from hftl import CausalLMRecipe, run_recipe
        result = run_recipe(CausalLMRecipe.from_yaml("recipes/configs/sst2_smollm2_clm_lora.yaml"))
        result.metrics["before_training"]["test"]["perplexity"], result.metrics["test"]["perplexity"]
        ```
    """

    task = "causal-lm"
    title = "Causal language modelling"
    pipeline_tag = "text-generation"
    summary_metrics = ("perplexity",)
    card_metrics = ("perplexity", "loss")
    index_metrics = {"perplexity": ("perplexity", "Perplexity", None)}
    generates_text = True
    labels_are_shifted = True
    data_config_class = CausalLMData
    peft_task_type = "CAUSAL_LM"
    head_modules = ("lm_head",)
    auto_model_class = "AutoModelForCausalLM"

    def tokenize(self, texts, tokenizer) -> dict:
        eos = tokenizer.eos_token_id
        docs = _documents(texts)
        ids = tokenizer(docs)["input_ids"] if docs else []
        if eos is not None:
            ids = [x if x and x[-1] == eos else x + [eos] for x in ids]
        return {"input_ids": ids}

    def finish_blocks(self, packed, tokenizer, name: str):
        # Labels are the inputs (the model shifts them), as in run_clm. Not DataCollatorForLanguageModeling(mlm=False):
        # it sets labels of pad tokens to -100, and where pad = EOS (GPT-2, SmolLM2) the model would never learn EOS.
        return packed.map(lambda batch: {"labels": batch["input_ids"]}, batched=True, desc=f"Labelling {name}")

    def data_collator(self, tokenizer):
        from transformers import default_data_collator

        return default_data_collator

    def predict(self, model, tokenizer, texts: list[str], labels=None, batch_size: int = 8, **kwargs) -> list[dict]:
        """Greedy continuations of each prompt (see `hftl.generation.generate` for sampling)."""
        from hftl.generation import generate

        return [{"prompt": t, "generated_text": generate(model, tokenizer, t, **kwargs)} for t in texts]


class MaskedLMRecipe(LanguageModelingRecipe):
    """Continue pretraining a BERT-style encoder on unlabelled in-domain text (masked-LM), e.g. before classification.

    The run folder of a `full` run is a plain transformers checkpoint; that of a `lora` run holds one in `merged/`.
    Either is a valid `model.name_or_path` for `TextClassificationRecipe` (the MLM head is dropped, a classifier
    is initialised).

    Example:
        ```python
        from hftl import MaskedLMRecipe, run_recipe
        result = run_recipe(MaskedLMRecipe.from_yaml("recipes/configs/sst2_minilm_mlm.yaml"))
        ```
    """

    task = "masked-lm"
    title = "Masked language modelling"
    pipeline_tag = "fill-mask"
    summary_metrics = ("pseudo_perplexity",)
    card_metrics = ("pseudo_perplexity", "loss")
    index_metrics = {"pseudo_perplexity": ("perplexity", "Pseudo-perplexity", None)}
    data_config_class = MaskedLMData
    peft_task_type = None  # peft has no masked-LM task type; the generic PeftModel passes everything through
    head_modules = ("cls", "lm_head", "generator_lm_head")  # BERT/MiniLM, RoBERTa, ELECTRA generator
    auto_model_class = "AutoModelForMaskedLM"
    perplexity_key = "pseudo_perplexity"
    token_level_loss = True  # BERT-style MLM heads take a plain mean per forward pass

    @classmethod
    def _check_model(cls, config) -> list[str]:
        from transformers import AutoTokenizer

        problems = super()._check_model(config)
        path, _ = resolve_checkpoint(config.model)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, **load_kwargs(config.model))
        except Exception:
            return problems  # reported when the tokenizer loads
        if tokenizer.mask_token is None:
            problems.append(f"model.name_or_path: the tokenizer of {config.model.name_or_path} has no mask token, so "
                            "it cannot do masked-LM. Use an encoder checkpoint (BERT, RoBERTa...), or task causal-lm for a decoder.")
        elif config.data.whole_word_masking and not tokenizer.is_fast:
            problems.append("data.whole_word_masking: needs a fast tokenizer (offsets of each token); this one is not.")
        return problems

    def load_processor(self):
        tokenizer = super().load_processor()
        if tokenizer.mask_token is None:
            raise DataError(f"the tokenizer of {self.config.model.name_or_path} has no mask token: masked-LM needs one.")
        return tokenizer

    def tokenize(self, texts, tokenizer) -> dict:
        wwm = self.config.data.whole_word_masking
        docs = _documents(texts)
        columns = ["input_ids", "special_tokens_mask"] + (["offset_mapping"] if wwm else [])
        if not docs:
            return {key: [] for key in columns}
        encoded = tokenizer(docs, return_special_tokens_mask=True, return_offsets_mapping=wwm)
        return {key: encoded[key] for key in columns}

    def _collator(self, tokenizer, seed=None):
        data = self.config.data
        return mask_once_collator_class()(tokenizer, mlm=True, mlm_probability=data.mlm_probability,
                                         whole_word_mask=data.whole_word_masking, seed=seed)

    def finish_blocks(self, packed, tokenizer, name: str):
        if name == "train":
            return packed.add_column(EXAMPLE_INDEX, list(range(len(packed))))
        # Evaluation blocks are masked once, with a fixed seed: every evaluation scores the same masked tokens.
        collator = self._collator(tokenizer, seed=self.config.seed)

        def mask(batch):
            rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
            masked = collator(rows)
            return {"input_ids": masked["input_ids"].tolist(), "labels": masked["labels"].tolist()}

        return packed.map(mask, batched=True, batch_size=_PACK_BATCH, remove_columns=packed.column_names,
                          desc=f"Masking {name} (fixed seed)")

    def data_collator(self, tokenizer):
        collator = self._collator(tokenizer)
        collator.epoch, collator.mask_seed = self.training_epoch, self.config.seed
        return collator

    def training_defaults(self) -> dict:
        # keep special_tokens_mask / offset_mapping / example_index for the collator (Trainer drops columns forward() does not take)
        return {**super().training_defaults(), "remove_unused_columns": False}

    def predict(self, model, tokenizer, texts: list[str], labels=None, batch_size: int = 8, top_k: int = 5) -> list[dict]:
        """The `top_k` fillers of each mask token in each text (write the mask as the tokenizer's, e.g. [MASK])."""
        import torch

        results = []
        for text in texts:
            batch = tokenizer(text, return_tensors="pt").to(model.device)
            with torch.inference_mode():
                probs = model(**batch).logits[0].float().softmax(-1)
            positions = (batch["input_ids"][0] == tokenizer.mask_token_id).nonzero().flatten().tolist()
            masks = []
            for pos in positions:
                top = probs[pos].topk(top_k)
                masks.append([{"token": tokenizer.decode([int(i)]).strip(), "score": float(p)}
                              for p, i in zip(top.values, top.indices)])
            results.append({"text": text, "masks": masks})
        return results


@functools.cache
def mask_once_collator_class():
    """`DataCollatorForLanguageModeling` that passes through blocks masked already (built on first use: keeps imports light)."""
    from transformers import DataCollatorForLanguageModeling, default_data_collator

    class MaskOnceCollator(DataCollatorForLanguageModeling):
        """Masks training blocks afresh each batch; evaluation blocks arrive masked (with labels) and are only stacked.

        Blocks carrying their position (`example_index`) are masked one at a time, each with a generator seeded by
        (`mask_seed`, `epoch.epoch`, position), when `epoch` is set: masks are then a function of the example, not
        of what was drawn before (torch's global generator is restored on resume only after the first batch is
        drawn; under DDP each process would draw other masks for its half batch).
        """

        epoch = None  # a TrainingEpoch
        mask_seed = 0

        def __call__(self, examples, return_tensors=None):
            if "labels" in examples[0]:
                return default_data_collator(examples)
            if self.epoch is None or EXAMPLE_INDEX not in examples[0]:
                return super().__call__([{k: v for k, v in e.items() if k != EXAMPLE_INDEX} for e in examples],
                                        return_tensors)
            import torch

            rows = []
            for example in examples:
                example = dict(example)
                seed = example_seed(self.mask_seed, self.epoch.epoch, int(example.pop(EXAMPLE_INDEX)))
                self.generator = torch.Generator().manual_seed(seed)  # read by torch_mask_tokens (seed=None)
                rows.append(super().__call__([example], "pt"))
            self.generator = None
            # training blocks all hold block_size tokens: the rows stack without padding
            return {key: torch.cat([row[key] for row in rows]) for key in rows[0]}

    return MaskOnceCollator


register_task(CausalLMRecipe)
register_task(MaskedLMRecipe)
