"""`hftl ui` timings, measured in a real browser (Debian's chromium through Playwright), against `hftl ui` started as
a user starts it.

    .venv/bin/python benchmarks/ui.py runs-page [--runs 200] [--repeats 5]
    .venv/bin/python benchmarks/ui.py live-curves [--steps 40]
    .venv/bin/python benchmarks/ui.py busy [--runs 200] [--repeats 5] [--nicenesses 0 10]

runs-page: writes `--runs` run folders (the records of a finished run: config, manifest, metrics, card, trainer
state and training log; no weights, which the Runs page never reads) under a temporary root, with a seed group
and a corrupt folder among them, starts `hftl ui` on it, and times, `--repeats` times in a fresh page, from the
request of the page to the table showing every run (the count line reading "N of N runs"). Also prints the time
`scan_runs` alone takes.

live-curves: launches a training of a tiny 2-layer BERT (the packaged all-MiniLM-L6-v2's tokenizer) on the bundled
demo data from the Train page (`logging_steps: 1`), and for every step the page shows, the delay between the step's record in the run's
`training_log.jsonl` (the time the Trainer logged it) and the moment the page showed it.

busy: the runs-page time above while a job launched from the Train page trains on every core (a 4-layer BERT,
hidden 256, random weights, 128-token batches of 32), against the same page with no job, for each
`hftl ui --job-niceness` value given (0, the default: the job at the UI's CPU priority). Prints each busy/idle
ratio, measured side by side on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def write_runs(root: Path, count: int) -> None:
    """`count` run folders with a finished run's records (varied tasks, strategies, metrics and dates)."""
    tasks = ["text-classification", "image-classification", "token-classification"]
    history = [{"loss": 1.0 / (s + 1), "step": s, "epoch": s / 10} for s in range(1, 101)]
    for i in range(count):
        folder = root / f"project-{i % 4}" / f"run-{i:03d}"
        if i == 7:  # a seed group: two seeds and the aggregate
            folder = root / "seeds-group" / f"seed-{i}"
        folder.mkdir(parents=True, exist_ok=True)
        config = {"task": tasks[i % 3], "model": {"name_or_path": "packaged:all-MiniLM-L6-v2",
                                                  "strategy": ["full", "freeze", "lora"][i % 3]},
                  "data": {"train": "../data/train.tsv", "text_column": "sentence", "label_column": "label"},
                  "training": {"output_dir": folder.name, "learning_rate": 1e-4 * (1 + i % 5), "seed": i}}
        (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        created = f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}T10:00:00+00:00"
        (folder / "manifest.json").write_text(json.dumps({"created": created, "task": config["task"], "seed": i}))
        metrics = {s: {"accuracy": 0.8 + (i % 17) / 100, "f1": 0.75 + (i % 13) / 100, "loss": 0.4,
                       "per_class": {"a": {"f1": 0.8}, "b": {"f1": 0.7}}, "confusion_matrix": [[10, 2], [3, 9]]}
                   for s in ("validation", "test")}
        (folder / "metrics.json").write_text(json.dumps(metrics))
        (folder / "README.md").write_text(f"# run {i}\n\n" + "A model card paragraph.\n" * 50)
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": 100, "log_history": history}))
        (folder / "training_log.jsonl").write_text("".join(json.dumps({"event": "log", **h}) + "\n" for h in history))
        os.utime(folder / "manifest.json", (time.time() - 3600,) * 2)
        os.utime(folder / "training_log.jsonl", (time.time() - 3600,) * 2)
    group = root / "seeds-group"
    group.mkdir(parents=True, exist_ok=True)
    (group / "metrics.json").write_text(json.dumps({"test": {"accuracy": {"mean": 0.8, "std": 0.01, "n": 2}},
                                                    "seeds": [7], "runs": ["seed-7"]}))
    (root / "corrupt").mkdir()
    (root / "corrupt" / "config.yaml").write_text("task: [")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`hftl ui --root ROOT` in a subprocess."""

    def __init__(self, root: Path, log: Path, extra: tuple = ()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
        self.log = log.open("wb")
        self.process = subprocess.Popen([sys.executable, "-m", "hftl.cli", "ui", "--root", str(root), "--port",
                                         str(self.port), *extra], env=env, stdout=self.log,
                                        stderr=subprocess.STDOUT)
        for _ in range(240):
            try:
                urllib.request.urlopen(self.url, timeout=2)
                return
            except OSError:
                if self.process.poll() is not None:
                    raise SystemExit(log.read_text())
                time.sleep(0.5)
        raise SystemExit("hftl ui did not start")

    def close(self):
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def runs_page(args) -> None:
    from playwright.sync_api import sync_playwright

    from hftl.ui.runs_index import scan_runs

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        write_runs(root, args.runs)
        scans = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            rows = scan_runs(root)
            scans.append(time.perf_counter() - start)
        total = len(rows)
        print(f"{total} rows ({args.runs} run folders, one seed group of 1, one corrupt folder)")
        print(f"scan_runs: median {statistics.median(scans):.3f} s, max {max(scans):.3f} s over {args.repeats}")
        server = Server(root, Path(tmp) / "ui.log")
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                times, loaded = time_runs_page(browser, server.url, total, args.repeats)
                browser.close()
        finally:
            server.close()
    print(f"of which the page's own load event (Gradio's scripts): median {statistics.median(loaded):.2f} s")
    print(f"Runs page, request to table shown: median {statistics.median(times):.2f} s, max {max(times):.2f} s "
          f"over {args.repeats} loads: {', '.join(f'{t:.2f}' for t in times)}")


def time_runs_page(browser, url: str, total: int, repeats: int) -> tuple[list, list]:
    """(request to the table showing all `total` rows, request to the load event) of `repeats` loads of the Runs
    page in fresh pages, after one untimed load that warms the server (imports, caches)."""
    times, loaded = [], []
    for i in range(repeats + 1):
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        start = time.perf_counter()
        page.goto(url)
        if i:
            loaded.append(time.perf_counter() - start)
        page.locator("#runs-count").get_by_text(f"{total} of {total} runs").wait_for(timeout=120_000)
        page.locator("#runs-table [role=gridcell]").filter(has_text="project-").first.wait_for()
        if i:
            times.append(time.perf_counter() - start)
        page.close()
    return times, loaded


TRAIN_YAML = """\
task: text-classification
model: {{name_or_path: models/tiny, strategy: full}}
data: {{train: data/train.tsv, text_column: sentence, label_column: label, max_length: 32}}
training: {{max_steps: {steps}, per_device_train_batch_size: 8, learning_rate: 0.001, logging_steps: 1,
           eval_strategy: "no", save_strategy: "no"}}
"""


def tiny_model(folder: Path, hidden: int = 32, layers: int = 2) -> None:
    """A BERT (by default 2 layers of hidden 32, random weights) with the packaged MiniLM's tokenizer: steps take
    milliseconds, so the delay measured is the page's, not the training's."""
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    from hftl.modeling import packaged_folder

    source, _ = packaged_folder("all-MiniLM-L6-v2")
    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.save_pretrained(folder)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=128)
    BertForMaskedLM(config).save_pretrained(folder)


def launch_from_train_page(browser, url: str, name: str, yaml_text: str):
    """Launch a job from the Train page as a user does; returns the page (its progress keeps refreshing)."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.get_by_role("tab", name="Train", exact=True).click()
    page.locator("#train-name textarea, #train-name input").first.fill(name)
    page.locator("#train-yaml .cm-content").click()
    page.keyboard.press("Control+A")
    page.keyboard.insert_text(yaml_text)
    page.wait_for_timeout(500)
    page.locator("#train-launch").click()
    page.locator("#train-job-result").get_by_text("Queued job").wait_for(timeout=120_000)
    return page


def live_curves(args) -> None:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        (root / "data").mkdir(parents=True)
        shutil.copy(REPO / "hftl" / "demo_data" / "train.tsv", root / "data" / "train.tsv")
        tiny_model(root / "models" / "tiny")
        server = Server(root, Path(tmp) / "ui.log")
        seen: dict[int, float] = {}
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                page = launch_from_train_page(browser, server.url, "latency", TRAIN_YAML.format(steps=args.steps))
                deadline = time.time() + 900
                while time.time() < deadline:
                    text = page.locator("#train-progress").inner_text()
                    now = time.time()
                    if "last loss" in text and "step " in text:
                        step = int(text.split("step ", 1)[1].split()[0])
                        seen.setdefault(step, now)
                    if any(word in text for word in ("finished", "failed", "stopped")):
                        break
                    page.wait_for_timeout(50)
                browser.close()
        finally:
            server.close()
        logged = {}
        for line in (root / "latency" / "training_log.jsonl").read_text().splitlines():
            record = json.loads(line)
            if record.get("event") == "log" and "loss" in record:
                logged.setdefault(record["step"], record["time"])
    delays = [seen[s] - logged[s] for s in sorted(seen) if s in logged]
    print(f"{len(delays)} steps shown of {len(logged)} logged (the page shows the latest step each refresh)")
    print(f"delay from a logged step to the page showing it: median {statistics.median(delays):.2f} s, "
          f"max {max(delays):.2f} s")


BUSY_YAML = """\
task: text-classification
model: {name_or_path: models/busy, strategy: full}
data: {train: data/train.tsv, text_column: sentence, label_column: label, max_length: 128}
training: {max_steps: 100000, per_device_train_batch_size: 32, learning_rate: 0.0001, logging_steps: 1,
           eval_strategy: "no", save_strategy: "no"}
speed: {padding: max_length}
"""


def proc_stat(pid: str) -> list[str]:
    """The fields of `/proc/PID/stat` after the command name (state first, the nice value at index 16)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def busy(args) -> None:
    from playwright.sync_api import sync_playwright

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from machine import machine_lines

    from hftl.ui.runs_index import scan_runs

    print("\n".join(machine_lines()))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        write_runs(root, args.runs)
        (root / "data").mkdir(parents=True)
        shutil.copy(REPO / "hftl" / "demo_data" / "train.tsv", root / "data" / "train.tsv")
        tiny_model(root / "models" / "busy", hidden=256, layers=4)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            for i, niceness in enumerate(args.nicenesses):
                server = Server(root, Path(tmp) / f"ui-{i}.log", ("--job-niceness", str(niceness)))
                try:
                    idle, _ = time_runs_page(browser, server.url, len(scan_runs(root)), args.repeats)
                    page = launch_from_train_page(browser, server.url, f"busy-{i}", BUSY_YAML)
                    page.locator("#train-progress").get_by_text("last loss").wait_for(timeout=300_000)
                    job = subprocess.run(["pgrep", "-P", str(server.process.pid), "-f", "hftl.cli train"],
                                         capture_output=True, text=True).stdout.split()[0]
                    job_nice = int(proc_stat(job)[16])
                    time.sleep(5)  # the job at full speed
                    loaded, _ = time_runs_page(browser, server.url, len(scan_runs(root)), args.repeats)
                    page.close()
                    os.kill(int(job), signal.SIGINT)  # as the page's Stop does; the next UI starts on an idle CPU
                    while Path(f"/proc/{job}").exists() and proc_stat(job)[0] != "Z":  # until it exits
                        time.sleep(0.5)
                finally:
                    server.close()
                results.append((niceness, idle, loaded, job_nice))
            browser.close()
    print(f"Runs page ({args.runs} run folders), request to table shown, median of {args.repeats} loads:")
    print("| job niceness | job's nice value (read) | no job | job training | busy / idle |")
    print("|---:|---:|---:|---:|---:|")
    for niceness, idle, loaded, job_nice in results:
        print(f"| {niceness} | {job_nice} | {statistics.median(idle):.2f} s | {statistics.median(loaded):.2f} s | "
              f"{statistics.median(loaded) / statistics.median(idle):.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    one = sub.add_parser("runs-page")
    one.add_argument("--runs", type=int, default=200)
    one.add_argument("--repeats", type=int, default=5)
    two = sub.add_parser("live-curves")
    two.add_argument("--steps", type=int, default=40)
    three = sub.add_parser("busy")
    three.add_argument("--runs", type=int, default=200)
    three.add_argument("--repeats", type=int, default=5)
    three.add_argument("--nicenesses", type=int, nargs="+", default=[0, 10, 0, 10],
                       help="one UI per value, in this order (repeat values to see the spread)")
    args = parser.parse_args()
    if CHROMIUM is None:
        raise SystemExit("needs chromium (apt-get install chromium) and playwright (pip install playwright)")
    {"runs-page": runs_page, "live-curves": live_curves, "busy": busy}[args.what](args)


if __name__ == "__main__":
    main()
