"""Training throughput and model FLOP utilisation (MFU) on one GPU, through `transformers.Trainer` as hftl runs it.

    bash benchmarks/gpu.sh                   # the whole run, bf16, <= 8 minutes on one H100/H200-class GPU
    bash benchmarks/gpu.sh --dry-run         # tiny sizes on CPU, fp32, a handful of steps (CI: tests/test_gpu_bench.py)
    python benchmarks/gpu_bench.py --peak-tflops 989 --workloads encoder-seq128 --steps 100

Workloads (models have RANDOM weights: speed does not depend on them, and no download is possible):

  encoder-sst2    BERT-base-sized sequence classifier (12 layers, hidden 768, 110M parameters) on SST-2
                  sentences (`--sst2 FOLDER` or ../shared/datasets/sst2 next to the repo; synthetic
                  sentences of SST-2-like lengths otherwise), dynamic padding, length-grouped batches.
  encoder-seq128  the same model, every example exactly 128 tokens (sentences joined and cut): the MFU target.
  vit             ViT-base-sized image classifier (224 px, 16 px patches, 86M parameters) on random images.

Variants (each a fresh model from the same seed and a fresh Trainer, `max_steps` fixed):

  eager         attention `eager`, AdamW `adamw_torch` (for-each, unfused)
  sdpa          attention `sdpa`, `adamw_torch`
  sdpa+fused    attention `sdpa`, `adamw_torch_fused` (the Trainer's default optimiser in transformers 5)
  first-token   sdpa+fused with `hftl.speed.first_token_last_layer` (encoders only)
  compile       sdpa+fused with `torch_compile` (inductor); encoders pad to a multiple of 32 (`pad_to_multiple_of`)
                so shapes come from a handful of buckets instead of one per batch length
  padding-free  `DataCollatorWithFlattening`: reported as n/a with the reason where the architecture cannot take it

Timing: a `TrainerCallback` synchronises the GPU and stamps every optimizer step; the first --warmup-steps
(compilation, allocator warm-up) are excluded. samples/s and non-pad tokens/s are over the timed steps; MFU
= 6 x non-embedding parameters x non-pad tokens / time / peak dense bf16 FLOP/s of the GPU (attention's
own FLOPs are not counted, so MFU is a floor). Peak memory is `torch.cuda.max_memory_allocated` (on CPU:
the process's peak RSS).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(HERE)]

from machine import machine_info, machine_lines  # noqa: E402

#: dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, from NVIDIA's data sheets; first match of the name wins
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H200 NVL", 835.0),
    ("GH200", 989.0),
    ("H200", 989.0),
    ("H100", 989.0),  # SXM ("NVIDIA H100 80GB HBM3")
    ("A100", 312.0),
)
FULL = {
    "bert": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "vit": dict(image_size=224, patch_size=16, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                intermediate_size=3072),
    "batch": {"encoder-sst2": 128, "encoder-seq128": 128, "vit": 128},
    "warmup_steps": 10, "steps": 40, "seq_len": 128, "vocab": 30522,
}
DRY = {
    "bert": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
    "vit": dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=64),
    "batch": {"encoder-sst2": 8, "encoder-seq128": 4, "vit": 4},
    "warmup_steps": 1, "steps": 2, "seq_len": 32, "vocab": 300,
}
WORKLOADS = ("encoder-sst2", "encoder-seq128", "vit")
BUCKET = 32  # pad_to_multiple_of for compiled encoders


@dataclass(frozen=True)
class Variant:
    name: str
    attention: str = "sdpa"
    optim: str = "adamw_torch_fused"
    compile: bool = False
    first_token: bool = False
    padding_free: bool = False


VARIANTS = {
    "encoder-sst2": (Variant("eager", "eager", "adamw_torch"), Variant("sdpa", optim="adamw_torch"),
                     Variant("sdpa+fused"), Variant("first-token", first_token=True), Variant("compile", compile=True),
                     Variant("padding-free", padding_free=True)),
    "encoder-seq128": (Variant("eager", "eager", "adamw_torch"), Variant("sdpa+fused"),
                       Variant("first-token", first_token=True), Variant("compile", compile=True)),
    "vit": (Variant("eager", "eager", "adamw_torch"), Variant("sdpa", optim="adamw_torch"), Variant("sdpa+fused"),
            Variant("compile", compile=True), Variant("padding-free", padding_free=True)),
}
#: why padding-free batches do not apply, by workload (checked against transformers 5.24)
PADDING_FREE_NA = {
    "encoder-sst2": "n/a: DataCollatorWithFlattening packs a batch into one row with per-token labels; sequence "
                    "classification needs one label per example and pools position 0 of each row (BERT's pooler)",
    "vit": "n/a: images have no padding (every image is (224/16)^2 + 1 tokens)",
}
COLUMNS = (("samples_per_s", "samples/s", "{:.1f}"), ("tokens_per_s", "tokens/s", "{:.0f}"),
           ("pad_fraction", "pad frac", "{:.2f}"), ("step_ms", "step ms", "{:.1f}"),
           ("peak_mem_gb", "peak GB", "{:.2f}"), ("mfu", "MFU %", "{:.1f}"))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="tiny models on CPU, fp32, a handful of steps")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="peak dense bf16 TFLOP/s for MFU (default: from the GPU's name; CPU: no MFU)")
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--variants", nargs="+", default=None, help="only these variant names (default: all)")
    parser.add_argument("--warmup-steps", type=int, default=None, help="untimed first steps (default 10; dry run 1)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per variant (default 40; dry run 2)")
    parser.add_argument("--batch-size", type=int, default=None, help="per-step batch (default 128; dry run 4-8)")
    parser.add_argument("--sst2", default=None,
                        help="folder with SST-2's train.tsv (default: ../shared/datasets/sst2 or /work/shared/... if "
                             "present, else synthetic sentences; the dry run is synthetic unless this is given)")
    parser.add_argument("--time-budget", type=float, default=450.0,
                        help="seconds; variants not started by then are skipped (the whole run must fit 8 minutes)")
    parser.add_argument("--json", default=None, help="results file (default: $OUT/gpu_bench.json or "
                                                     "benchmarks/results/gpu-<time>.json)")
    return parser.parse_args(argv)


# -- data --------------------------------------------------------------------------------------------------


def sst2_sentences(args) -> tuple[list[str], str]:
    """SST-2 training sentences if a folder has them, else synthetic sentences with SST-2-like lengths."""
    import csv

    candidates = [Path(args.sst2)] if args.sst2 else [] if args.dry_run else [
        REPO.parent / "shared" / "datasets" / "sst2", REPO / "shared" / "datasets" / "sst2",
        Path("/work/shared/datasets/sst2")]
    for folder in candidates:
        path = folder / "train.tsv"
        if path.is_file():
            with path.open(encoding="utf-8", newline="") as handle:
                rows = [r["sentence"] for r in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)]
            return rows, f"SST-2 sentences from {path}"
    rng = random.Random(0)
    words = ("the film is a story of love and loss with wonderful acting but dull pacing , never quite "
             "funny or moving enough to carry its long running time ; yet the cast is charming .").split()
    # SST-2 train phrases: ~9 words on average, a long tail to ~50
    sentences = [" ".join(rng.choice(words) for _ in range(max(1, min(50, int(rng.lognormvariate(2.0, 0.7))))))
                 for _ in range(4000)]
    return sentences, "synthetic sentences (no SST-2 folder found)"


def make_tokenizer(sentences: list[str], vocab: int, dry_run: bool):
    """The packaged MiniLM's uncased BERT WordPiece (30,522 tokens) if installed, else one trained here."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if not dry_run:
        try:
            from hftl.modeling import packaged_folder

            folder, _ = packaged_folder("all-MiniLM-L6-v2")
            if folder is not None:
                return AutoTokenizer.from_pretrained(folder), "BERT uncased WordPiece (packaged MiniLM)"
        except (ImportError, OSError, KeyError):
            pass
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(sentences, trainers.WordPieceTrainer(vocab_size=vocab, special_tokens=special))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[(t, tok.token_to_id(t)) for t in ("[CLS]", "[SEP]")])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    return tokenizer, f"WordPiece trained here on the sentences ({tok.get_vocab_size()} tokens)"


def encoder_dataset(workload: str, sentences: list[str], tokenizer, seq_len: int, count: int):
    from datasets import Dataset

    rng = random.Random(1)
    if workload == "encoder-seq128":  # sentences joined until past seq_len, then cut: every example seq_len tokens
        texts = [" ".join(rng.choice(sentences) for _ in range(seq_len // 2)) for _ in range(count)]
    else:
        texts = [rng.choice(sentences) for _ in range(count)]
    encoded = tokenizer(texts, truncation=True, max_length=seq_len)
    return Dataset.from_dict({"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"],
                              "labels": [rng.randrange(2) for _ in texts]})


class RandomImages:
    """`count` images drawn from a pool of 256 random uint8 images (made once), labels 0..9."""

    def __init__(self, count: int, side: int):
        import torch

        generator = torch.Generator().manual_seed(0)
        self.pool = torch.randint(0, 256, (256, 3, side, side), dtype=torch.uint8, generator=generator)
        self.count = count

    def __len__(self):
        return self.count

    def __getitem__(self, index):
        return {"pixel_values": self.pool[index % len(self.pool)], "labels": index % 10}


def collate_images(features):
    import torch

    pixels = torch.stack([f["pixel_values"] for f in features]).float().div_(127.5).sub_(1.0)
    return {"pixel_values": pixels, "labels": torch.tensor([f["labels"] for f in features])}


class CountingCollator:
    """Wraps a collator; records (samples, token positions, non-pad tokens) of every batch in order."""

    def __init__(self, collate, tokens_per_sample: int | None = None):
        self.collate, self.tokens_per_sample, self.batches = collate, tokens_per_sample, []

    def __call__(self, features):
        batch = self.collate(features)
        samples = len(features)
        if self.tokens_per_sample is not None:  # images: a fixed number of patch tokens
            positions = nonpad = samples * self.tokens_per_sample
        else:
            positions, nonpad = batch["input_ids"].numel(), int(batch["attention_mask"].sum())
        self.batches.append((samples, positions, nonpad))
        return batch


# -- one run -----------------------------------------------------------------------------------------------


def step_timer(device):
    """A TrainerCallback stamping each optimizer step after the device has finished it."""
    import torch
    from transformers import TrainerCallback

    class StepTimes(TrainerCallback):
        def __init__(self):
            self.times, self.graphs = [], []

        def on_step_end(self, args, state, control, **kwargs):
            if device.type == "cuda":
                torch.cuda.synchronize()
            self.times.append(time.perf_counter())
            self.graphs.append(compiled_graphs())

    return StepTimes()


def compiled_graphs() -> int | None:
    """Graphs torch.compile has made so far (private torch._dynamo counters, checked on torch 2.13); None if absent."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return None
    return int(counters["stats"]["unique_graphs"])


def non_embedding_parameters(model) -> int:
    """Parameters outside embedding tables and position / class vectors (they do no matmul FLOPs per token)."""
    import torch

    skip = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    return sum(p.numel() for name, p in model.named_parameters()
               if id(p) not in skip and not name.endswith(("position_embeddings", "cls_token")))


def build_model(workload: str, sizes: dict, variant: Variant, vocab: int, device):
    import torch
    from transformers import (AutoModelForImageClassification, AutoModelForSequenceClassification, BertConfig,
                              ViTConfig)

    torch.manual_seed(0)
    with torch.device(device):
        if workload == "vit":
            # problem_type set up front: the head sets it on its first call, which would make torch.compile recompile
            config = ViTConfig(**sizes["vit"], num_labels=10, problem_type="single_label_classification")
            model = AutoModelForImageClassification.from_config(config, attn_implementation=variant.attention)
        else:
            config = BertConfig(**sizes["bert"], vocab_size=vocab, num_labels=2, max_position_embeddings=512,
                                problem_type="single_label_classification")
            model = AutoModelForSequenceClassification.from_config(config, attn_implementation=variant.attention)
    if variant.first_token:
        from hftl.speed.first_token_last_layer import use_first_token_last_layer

        if not use_first_token_last_layer(model):
            raise RuntimeError("first_token_last_layer did not apply to the benchmark's BERT")
    return model


def run_variant(workload: str, variant: Variant, args, sizes: dict, data, tokenizer, device, peak_tflops):
    import torch
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    warmup, steps = args.warmup_steps, args.steps
    batch = args.batch_size or sizes["batch"][workload]
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    if variant.compile:
        torch._dynamo.reset()  # each compiled variant pays (and counts) its own compilation
    model = build_model(workload, sizes, variant, len(tokenizer) if tokenizer is not None else 0, device)
    parameters = non_embedding_parameters(model)
    if workload == "vit":
        tokens_per_image = (sizes["vit"]["image_size"] // sizes["vit"]["patch_size"]) ** 2 + 1
        collator = CountingCollator(collate_images, tokens_per_image)
    else:
        pad_to = BUCKET if variant.compile and workload == "encoder-sst2" else None
        collator = CountingCollator(DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to))
    timer = step_timer(device)
    with tempfile.TemporaryDirectory(prefix="gpu-bench-") as out:
        training_args = TrainingArguments(
            output_dir=out, max_steps=warmup + steps, per_device_train_batch_size=batch, learning_rate=1e-5,
            optim=variant.optim, bf16=device.type == "cuda", use_cpu=device.type != "cuda",
            torch_compile=variant.compile,
            # the dry run proves the compile path (dynamo tracing through the Trainer) without CPU inductor builds
            torch_compile_backend=("inductor" if device.type == "cuda" else "eager") if variant.compile else None,
            train_sampling_strategy="group_by_length" if workload == "encoder-sst2" else "random",
            dataloader_drop_last=True, dataloader_num_workers=4 if workload == "vit" and device.type == "cuda" else 0,
            logging_strategy="no", save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True,
            seed=0)
        trainer = Trainer(model=model, args=training_args, train_dataset=data, data_collator=collator,
                          callbacks=[timer])
        trainer.train()
    times, graphs = timer.times, timer.graphs
    if len(times) != warmup + steps:
        raise RuntimeError(f"expected {warmup + steps} steps, timed {len(times)}")
    seconds = times[-1] - times[warmup - 1] if warmup else times[-1] - times[0]
    timed_steps = steps if warmup else steps - 1
    if workload == "vit":  # collated in worker processes: count from the (fixed) shapes
        samples = positions = nonpad = batch * timed_steps * tokens_per_image
        samples = batch * timed_steps
    else:
        timed = collator.batches[warmup:warmup + steps] if warmup else collator.batches[1:steps]
        samples, positions, nonpad = (sum(b[i] for b in timed) for i in range(3))
    if device.type == "cuda":
        peak_gb = torch.cuda.max_memory_allocated() / 2**30
    else:
        import resource

        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB -> GiB
    mfu = 100 * 6 * parameters * nonpad / seconds / (peak_tflops * 1e12) if peak_tflops else None
    notes = []
    if variant.compile and graphs[-1] is not None and graphs[warmup - 1 if warmup else 0] != graphs[-1]:
        notes.append(f"recompiled during timed steps ({graphs[-1]} graphs)")
    elif variant.compile and graphs[-1] is not None:
        notes.append(f"{graphs[-1]} compiled graph(s)")
    if variant.first_token:
        notes.append("MFU counts the full model's FLOPs")
    del trainer, model
    gc.collect()
    return {"workload": workload, "variant": variant.name, "batch": batch, "timed_steps": timed_steps,
            "samples_per_s": samples / seconds, "tokens_per_s": nonpad / seconds,
            "pad_fraction": 1 - nonpad / positions, "step_ms": 1e3 * seconds / timed_steps,
            "peak_mem_gb": peak_gb, "mfu": mfu, "non_embedding_parameters": parameters, "notes": "; ".join(notes)}


def format_table(rows: list[dict]) -> str:
    header = ["workload", "variant", *(title for _, title, _ in COLUMNS), "notes"]
    lines = [header]
    for row in rows:
        cells = [fmt.format(row[key]) if row.get(key) is not None else "-" for key, _, fmt in COLUMNS]
        lines.append([row["workload"], row["variant"], *cells, row.get("notes", "")])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(c.ljust(w) if i in (0, 1, len(header) - 1) else c.rjust(w)
                      for i, (c, w) in enumerate(zip(line, widths))).rstrip() for line in lines]
    text.insert(1, "-" * len(text[0]))
    return "\n".join(text)


def detect_peak(device, override):
    if override:
        return override, "--peak-tflops"
    if device.type != "cuda":
        return None, "no MFU on CPU unless --peak-tflops is given"
    import torch

    name = torch.cuda.get_device_name(0)
    for key, value in PEAK_BF16_TFLOPS:
        if key in name:
            return value, f"{key} data sheet"
    return None, f"unknown GPU '{name}': give --peak-tflops"


def main(argv=None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = parse_args(argv)
    import torch

    started = time.time()
    sizes = DRY if args.dry_run else FULL
    args.warmup_steps = sizes["warmup_steps"] if args.warmup_steps is None else args.warmup_steps
    args.steps = sizes["steps"] if args.steps is None else args.steps
    if args.steps < 2:
        raise SystemExit("--steps: give at least 2 timed steps")
    use_cuda = torch.cuda.is_available() and not args.dry_run
    if not use_cuda and not args.dry_run:
        raise SystemExit("no CUDA GPU visible: this benchmark is for a GPU; use --dry-run to check it on CPU")
    device = torch.device("cuda" if use_cuda else "cpu")
    peak, peak_source = detect_peak(device, args.peak_tflops)
    info = machine_info(bf16=use_cuda)
    print("\n".join(machine_lines(use_cuda, info)))
    print(f"mode: {'DRY RUN (tiny models, CPU, fp32)' if args.dry_run else 'bf16 autocast on ' + str(device)}; "
          f"models have RANDOM weights (speed only); warm-up {args.warmup_steps} steps untimed, "
          f"{args.steps} timed; peak bf16 {peak or '-'} TFLOP/s ({peak_source})", flush=True)

    sentences, source = sst2_sentences(args)
    tokenizer = None
    if any(w.startswith("encoder") for w in args.workloads):
        tokenizer, tokenizer_source = make_tokenizer(sentences, sizes["vocab"], args.dry_run)
        print(f"text: {source}; tokenizer: {tokenizer_source}", flush=True)
    rows = []
    for workload in args.workloads:
        variants = [v for v in VARIANTS[workload] if args.variants is None or v.name in args.variants]
        batch = args.batch_size or sizes["batch"][workload]
        count = batch * (args.warmup_steps + args.steps + 2)
        if workload == "vit":
            data = RandomImages(count, sizes["vit"]["image_size"])
        else:
            data = encoder_dataset(workload, sentences, tokenizer, sizes["seq_len"], count)
        for variant in variants:
            if variant.padding_free:
                rows.append({"workload": workload, "variant": variant.name, "notes": PADDING_FREE_NA[workload]})
            elif time.time() - started > args.time_budget:
                rows.append({"workload": workload, "variant": variant.name,
                             "notes": f"skipped: past the {args.time_budget:.0f} s time budget"})
            else:
                rows.append(run_variant(workload, variant, args, sizes, data, tokenizer, device, peak))
            row = rows[-1]
            print(f"[{time.time() - started:5.0f} s] {workload} {variant.name}: "
                  + (f"{row['samples_per_s']:.1f} samples/s, {row['tokens_per_s']:.0f} tokens/s, MFU "
                     f"{'-' if row['mfu'] is None else format(row['mfu'], '.1f')}%" if "step_ms" in row
                     else row["notes"]), flush=True)

    print()
    print("\n".join(machine_lines(use_cuda, info)))
    print(f"peak bf16: {peak or '-'} TFLOP/s ({peak_source}); RANDOM weights; tokens/s counts non-pad tokens; "
          f"MFU = 6 x non-embedding parameters x non-pad tokens / time / peak")
    print(format_table(rows))
    target = [r for r in rows if r["workload"] == "encoder-seq128" and r.get("mfu") is not None]
    if target and not args.dry_run:
        best = max(target, key=lambda r: r["mfu"])
        print(f"encoder at sequence length 128: best MFU {best['mfu']:.1f}% ({best['variant']}); target >= 35%: "
              f"{'met' if best['mfu'] >= 35 else 'NOT met'}")
    out = Path(args.json) if args.json else (Path(os.environ["OUT"]) / "gpu_bench.json" if os.environ.get("OUT")
                                              else HERE / "results" / f"gpu-{datetime.now():%Y%m%dT%H%M%S}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                               "command": " ".join(sys.argv), "dry_run": args.dry_run, "machine": info,
                               "peak_tflops": peak, "peak_source": peak_source, "text": source,
                               "total_s": time.time() - started, "rows": rows}, indent=2) + "\n", encoding="utf-8")
    print(f"results: {out} ({time.time() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
