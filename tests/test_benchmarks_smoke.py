"""The speed suite keeps working: its smoke mode runs every variant for two steps on a tiny model.

No timing is asserted (CI machines are too noisy); only that each variant ran, trained and reported.
"""

import json
import subprocess
import sys
from pathlib import Path

from conftest import make_sentences, write_tsv

REPO = Path(__file__).resolve().parents[1]


def sst2_like(tmp_path) -> Path:
    """A folder with SST-2's file names, 48 fixture sentences each."""
    data = tmp_path / "sst2"
    data.mkdir()
    for name, seed in (("train.tsv", 1), ("dev.tsv", 2), ("test.tsv", 3)):
        write_tsv(data / name, make_sentences(48, seed=seed))
    return data


def run_suite(tmp_path, *args: str) -> tuple[dict, subprocess.CompletedProcess]:
    """`benchmarks/run.py ARGS` in a process of its own, its report and work files in `tmp_path`: the report, and
    the finished process (its exit status checked)."""
    out = tmp_path / "results.json"
    completed = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run.py"), *args, "--out", str(out), "--workdir",
         str(tmp_path / "work")],
        capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return json.loads(out.read_text()), completed


def test_smoke_runs_every_variant(tmp_path, tiny_bert_dir):
    variants = ["baseline-padded", "baseline-best", "hftl", "hftl[speed.group_by_length=false]"]
    report, completed = run_suite(tmp_path, "--smoke", "--data", str(sst2_like(tmp_path)), "--model",
                                  str(tiny_bert_dir), "--variants", *variants)
    assert list(report["summary"]) == variants
    for name, summary in report["summary"].items():
        assert summary["train_steps"] == 2, name
        assert summary["train_samples"] == 16, name  # 2 steps x batch 8
        assert 0 <= summary["accuracy"] <= 1 and 0 <= summary["f1"] <= 1
        assert summary["t_first_step"] < summary["wall_s"]
        assert summary["peak_rss_mb"] > 0
    # padding to max_length (32) wastes most of each batch; dynamic padding wastes less
    assert report["summary"]["baseline-padded"]["padding_fraction"] > report["summary"]["baseline-best"]["padding_fraction"]
    assert set(report["ratios"]) == {f"{h} vs {b}" for h in variants[2:] for b in variants[:2]}
    assert report["startup"]["median_s"] > 0
    assert "baseline-best" in completed.stdout and "hftl --help" in completed.stdout


def test_missing_data_skips_with_a_message(tmp_path):
    completed = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run.py"), "--smoke", "--data", str(tmp_path / "absent")],
        capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0
    assert "benchmark skipped" in completed.stdout and "train.tsv" in completed.stdout


def test_smoke_causal_lm_workload(tmp_path, tiny_gpt2_dir):
    """Packing against one padded sentence per example: tokens/s counts non-pad tokens, quality is test perplexity."""
    report, completed = run_suite(tmp_path, "--workload", "causal-lm", "--smoke", "--data", str(sst2_like(tmp_path)),
                                  "--model", str(tiny_gpt2_dir), "--no-startup")
    assert report["workload"]["name"] == "causal-lm"
    assert list(report["summary"]) == ["baseline-padded", "baseline-best", "hftl"]
    for name, summary in report["summary"].items():
        assert summary["train_steps"] == 2, name
        assert summary["train_samples"] == 8, name  # 2 steps x batch 4
        assert summary["perplexity"] > 1 and summary["loss"] > 0, name
        assert "accuracy" not in summary
    # packed blocks have no padding; one sentence per block of 32 tokens is mostly padding
    assert report["summary"]["baseline-best"]["padding_fraction"] == 0
    assert report["summary"]["hftl"]["padding_fraction"] == 0
    assert report["summary"]["baseline-padded"]["padding_fraction"] > 0.5
    # every variant evaluates the same packed test blocks: before training (random GPT-2) the losses agree closely
    losses = [s["loss"] for s in report["summary"].values()]
    assert max(losses) - min(losses) < 0.5
    assert set(report["ratios"]) == {"hftl vs baseline-padded", "hftl vs baseline-best"}
    assert all("perplexity_delta" in r and "accuracy_delta" not in r for r in report["ratios"].values())
    assert "test ppl" in completed.stdout


def test_smoke_image_classification_workload(tmp_path):
    """sklearn digits exported to image folders, a tiny random ViT made by the workload; padding variants refused."""
    report, completed = run_suite(tmp_path, "--workload", "image-classification", "--smoke", "--no-startup")
    assert report["workload"]["rows"] == {"train": 48, "validation": 16, "test": 16}
    assert list(report["summary"]) == ["baseline-best", "hftl"]
    for name, summary in report["summary"].items():
        assert summary["train_steps"] == 2, name
        assert summary["train_samples"] == 16, name  # 2 steps x batch 8, counted from pixel_values
        assert 0 <= summary["accuracy"] <= 1 and 0 <= summary["f1"] <= 1
        assert "nonpad_tokens_per_s" not in summary and "padding_fraction" not in summary
    assert set(report["ratios"]) == {"hftl vs baseline-best"}
    assert "tokens/s" not in completed.stdout  # no token columns for images

    refused = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run.py"), "--workload", "image-classification", "--smoke",
         "--variants", "baseline-padded", "hftl"],
        capture_output=True, text=True, timeout=120,
    )
    assert refused.returncode != 0 and "does not apply" in refused.stderr


def test_stsb_loss_probe_runs(tmp_path, tiny_bert_dir):
    """`benchmarks/stsb_loss_probe.py` (the plain-Trainer check behind `data.score_range`) runs both losses."""
    import random

    rng = random.Random(0)
    data = tmp_path / "stsb"
    data.mkdir()
    for name in ("train", "dev", "test"):
        words = ["a", "film", "good", "bad", "plot"]
        rows = [(" ".join(rng.choices(words, k=4)), "the film", round(rng.uniform(0, 5), 2)) for _ in range(24)]
        write_tsv(data / f"{name}.tsv", rows, header=("sentence1", "sentence2", "score"))
    for loss in ("mse", "bce"):
        out = tmp_path / loss
        completed = subprocess.run(
            [sys.executable, str(REPO / "benchmarks" / "stsb_loss_probe.py"), "--loss", loss, "--data", str(data),
             "--model", str(tiny_bert_dir), "--epochs", "1", "--output-dir", str(out)],
            capture_output=True, text=True, timeout=600,
        )
        assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
        results = json.loads((out / "results.json").read_text())
        assert results["loss"] == loss and {"test_pearson", "test_spearman"} <= set(results["test"])
        assert results["train_runtime"] > 0


def test_predict_speed_compares_methods_on_the_same_texts(tmp_path, tiny_bert_dir):
    """benchmarks/predict_speed.py runs each method on the same texts and checks labels against pipeline()'s."""
    data = tmp_path / "sst2"
    data.mkdir()
    for name, seed in (("dev.tsv", 2), ("test.tsv", 3)):
        write_tsv(data / name, make_sentences(24, seed=seed))
    methods = ["pipeline", "trainer-eval-fp32", "hftl-fp32"]
    completed = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "predict_speed.py"), "--data", str(data), "--model",
         str(tiny_bert_dir), "--repeats", "1", "--methods", *methods],
        capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "texts: 48 from dev+test" in completed.stdout and "CPU:" in completed.stdout
    rows = {fields[0]: fields for fields in map(str.split, completed.stdout.splitlines()) if fields[:1] and fields[0] in methods}
    assert set(rows) == set(methods)
    for method in methods:  # every float32 method gives pipeline()'s labels
        assert rows[method][3] == "48/48", rows[method]


def test_smoke_preference_tuning_workload(tmp_path):
    """hftl's DPO against TRL's DPOTrainer as its docs write it, on the same pairs: both train, count their tokens
    (TRL's own compute_loss included) and report the test reward accuracy and margin."""
    from chat_fixtures import QUESTIONS, build_model_dir, write_jsonl

    model = build_model_dir(tmp_path / "model", "llama3")
    data = tmp_path / "pairs"
    data.mkdir()
    for name, n in (("train.jsonl", 32), ("test.jsonl", 8)):
        write_jsonl(data / name, [{"prompt": [{"role": "user", "content": QUESTIONS[i % 6][0]}],
                                   "chosen": [{"role": "assistant", "content": "good " * (1 + i % 3)}],
                                   "rejected": [{"role": "assistant", "content": "bad"}]} for i in range(n)])
    report, completed = run_suite(tmp_path, "--workload", "preference-tuning", "--smoke", "--data", str(data),
                                  "--model", str(model), "--max-length", "96", "--no-startup")
    assert report["workload"]["rows"] == {"train": 24, "validation": 4, "test": 4}
    assert list(report["summary"]) == ["baseline-trl", "hftl"]
    for name, summary in report["summary"].items():
        assert summary["train_steps"] == 2, name
        assert summary["train_samples"] == 16, name  # 2 steps x 4 pairs x (chosen, rejected)
        assert 0 < summary["padding_fraction"] < 1 and summary["reward_margin"] != 0, name
    assert set(report["ratios"]) == {"hftl vs baseline-trl"}
    assert "test reward acc" in completed.stdout


def test_evaluation_precision_times_both_precisions_on_the_same_figures(tmp_path):
    """benchmarks/evaluation_precision.py evaluates one model in bf16 autocast and in float32, and the two sets
    of figures differ only by rounding (a model evaluated twice in float32 would give the same loss exactly)."""
    import yaml

    from chat_fixtures import build_model_dir, chat_rows, write_jsonl

    model = build_model_dir(tmp_path / "model", "chatml")
    test = write_jsonl(tmp_path / "test.jsonl", chat_rows(6, 2))
    config = {"task": "instruction-tuning", "model": {"name_or_path": str(model), "strategy": "full"},
              "data": {"train": str(test), "test": str(test), "max_length": 64, "generation_max_new_tokens": 4},
              "training": {"output_dir": str(tmp_path / "run")}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "precision.json"
    completed = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "evaluation_precision.py"), str(path), "--repeats", "1",
         "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "float32 / bfloat16 time:" in completed.stdout
    figures = json.loads(out.read_text())["figures"]
    bf16, fp32 = figures["bfloat16"]["loss"], figures["float32"]["loss"]
    assert bf16 != fp32 and abs(bf16 - fp32) < 0.05 * fp32


def test_stopping_scores_a_preference_run_on_an_instruction_runs_prompts(tmp_path):
    """benchmarks/stopping.py DPO_RUN --prompts-of SFT_RUN: the preference run (whose own test data are pairs) is
    scored on the instruction run's test prompts. Its replies are the ones generate_batch gives that model on those
    prompts, independently of the script."""
    import yaml

    from chat_fixtures import QUESTIONS, build_model_dir, write_jsonl
    from hftl.cli import main
    from hftl.inference import load
    from hftl.tasks.instruction_tuning import generate_batch

    model = build_model_dir(tmp_path / "model", "chatml")
    chats = write_jsonl(tmp_path / "chats.jsonl", [
        {"messages": [{"role": "user", "content": f"{q} {i}"}, {"role": "assistant", "content": a}]}
        for i, (q, a) in enumerate(QUESTIONS * 2)])
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": [{"role": "user", "content": q}], "chosen": [{"role": "assistant", "content": a}],
         "rejected": [{"role": "assistant", "content": "maybe"}]} for q, a in QUESTIONS * 2])
    runs = {"sft": {"task": "instruction-tuning", "data": {"train": str(chats), "test": str(chats), "max_length": 64,
                                                           "generation_max_new_tokens": 8, "generation_samples": 5,
                                                           "baseline": False}},
            "dpo": {"task": "preference-tuning", "data": {"train": str(pairs), "test": str(pairs), "max_length": 64,
                                                          "baseline": False}}}
    for name, settings in runs.items():
        settings.update(model={"name_or_path": str(model), "strategy": "full"}, speed={"bf16": False},
                        training={"output_dir": str(tmp_path / name), "max_steps": 2, "per_device_train_batch_size": 4,
                                  "eval_strategy": "no", "save_strategy": "no", "seed": 1})
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(settings))
        assert main(["train", str(tmp_path / f"{name}.yaml")]) == 0
    out = tmp_path / "stopping.json"
    completed = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "stopping.py"), str(tmp_path / "dpo"), "--penalties", "1.0",
         "--prompts-of", str(tmp_path / "sft"), "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert f"5 test prompts of {tmp_path / 'sft'}, up to 8 new tokens" in completed.stdout
    report = json.loads(out.read_text())
    dpo = load(tmp_path / "dpo")
    prompts = [[{"role": "user", "content": f"{q} {i}"}] for i, (q, _) in enumerate(QUESTIONS[:5])]
    expected = generate_batch(dpo.model, dpo.processor, prompts, 8)
    got = sorted(report["replies"]["1.0"], key=lambda row: row["row"])
    assert [(row["prompt"], row["generated"], row["new_tokens"]) for row in got] == [
        (p[0]["content"], r["text"], r["new_tokens"]) for p, r in zip(prompts, expected)]
    assert report["rows"][0]["generated"] == 5
