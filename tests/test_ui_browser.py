"""`hftl ui` in a real browser: Debian's chromium driven by Playwright, against `hftl ui` started as a user starts
it, on a runs folder holding a tiny finished run of every task, a seed group, and broken folders
(tests/ui_runs.py). Screenshots go to a temporary folder, or, to refresh the pictures the README and docs/ui.md
show, to the folder named by HFTL_SCREENSHOTS: `HFTL_SCREENSHOTS=docs/images pytest tests/test_ui_browser.py`.

Skipped, saying why, where chromium or Playwright is missing; .ci/setup installs both.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from test_image_classification import tiny_vit_dir  # noqa: F401  (a fixture)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("chromium is not installed (.ci/setup installs Debian's chromium): no browser to test hftl ui in",
                allow_module_level=True)
pytest.importorskip("gradio", reason="hftl ui needs the ui extra: pip install 'hftl[ui]'")
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright (the test extra)")

from ui_runs import make_runs_root  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
#: a test run leaves the checkout as it was; the docs' pictures change only when asked for
IMAGES = (REPO / os.environ["HFTL_SCREENSHOTS"] if os.environ.get("HFTL_SCREENSHOTS")
          else Path(tempfile.mkdtemp(prefix="hftl-ui-screenshots-")))
#: how long a page may take to show what a test waits for (a loaded 2-core machine)
WAIT_MS = 60_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory, tiny_bert_dir, tiny_gpt2_dir, tiny_vit_dir):  # noqa: F811
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("ui") / "runs"
    make_runs_root(root, {"bert": tiny_bert_dir, "gpt2": tiny_gpt2_dir, "vit": tiny_vit_dir})
    torch.set_num_threads(threads)
    shutil.copytree(tiny_bert_dir, root / "models" / "tiny-bert")  # a checkpoint inside the root, for Train
    (root / "text-bert-full" / "leak").symlink_to("/etc/passwd")  # a symlink that leaves the root
    return root


@pytest.fixture(scope="module")
def server(runs_root, tmp_path_factory):
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           "HF_DATASETS_CACHE": str(tmp_path_factory.mktemp("ui-datasets-cache"))}
    log = (runs_root.parent / "ui.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "hftl.cli", "ui", "--root", str(runs_root), "--port", str(port)],
                               cwd=runs_root.parent, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            assert process.poll() is None, (runs_root.parent / "ui.log").read_text()
            time.sleep(0.5)
    else:
        pytest.fail("hftl ui did not start: " + (runs_root.parent / "ui.log").read_text()[-3000:])
    yield url
    process.send_signal(signal.SIGINT)  # as Ctrl-C: the UI stops its jobs gracefully
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(WAIT_MS)
    yield page
    page.close()


def _open(page, server, tab: str | None = None, query: str = ""):
    page.goto(server + query)
    if query:  # ?run=NAME opens the Run page
        page.locator("#run-status").get_by_text(query.split("=", 1)[1]).first.wait_for()
        return
    page.locator("#runs-table").get_by_text("text-bert-full").first.wait_for()
    if tab:
        page.get_by_role("tab", name=tab, exact=True).click()


def _choose(page, elem_id: str, value: str):
    box = page.locator(f"#{elem_id} input").first
    box.click()
    box.fill(value)
    box.press("Enter")


def _text(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id}").inner_text()


def _shot(page, name: str):
    IMAGES.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(IMAGES / f"ui-{name}.png"), full_page=True)


def _set_code(page, elem_id: str, text: str):
    editor = page.locator(f"#{elem_id} .cm-content")
    editor.click()
    page.keyboard.press("Control+A")
    page.keyboard.insert_text(text)


# -- Runs and Run ---------------------------------------------------------------------------------
def test_runs_page_lists_every_run_with_its_status(page, server):
    _open(page, server)
    table = _text(page, "runs-table")
    for name in ("text-bert-full", "image-vit-freeze", "ner-bert-lora", "clm-gpt2-lora", "mlm-bert-full", "text-seeds",
                 "half-written", "broken"):
        assert name in table
    assert "seed-13" not in table  # a seed group is one row
    seeds_row = page.locator("#runs-table [role=row]", has_text="text-seeds").inner_text()
    assert re.search(r"accuracy \d\.\d{4} ± \d\.\d{4}", seeds_row) and "finished" in seeds_row
    assert "metrics.json cannot be read" in page.locator("#runs-table [role=row]", has_text="half-written").inner_text()
    assert "corrupt" in page.locator("#runs-table [role=row]", has_text="broken").inner_text()
    assert "8 of 8 runs" in _text(page, "runs-count") and "2 corrupt" in _text(page, "runs-count")
    _shot(page, "runs")
    page.locator("#runs-search input, #runs-search textarea").first.fill("lora")
    page.locator("#runs-count").get_by_text("2 of 8 runs").wait_for()
    table = _text(page, "runs-table")
    assert "ner-bert-lora" in table and "clm-gpt2-lora" in table and "text-bert-full" not in table


def test_run_page_shows_the_card_with_figures_the_config_and_files(page, server):
    _open(page, server)
    page.locator("#runs-table").get_by_text("text-bert-full").first.click()  # a row opens the Run page
    page.locator("#run-status").get_by_text("finished").wait_for()
    card = page.locator("#run-card")
    card.get_by_text("Evaluation").first.wait_for()
    figures = card.locator("img[src^='data:image/png']")
    assert figures.count() >= 3  # training curves, reliability diagram, confusion matrix
    _shot(page, "run")
    page.get_by_role("tab", name="Config").click()
    assert "task: text-classification" in page.locator("#run-config").inner_text()
    page.get_by_role("tab", name="Files").click()
    page.locator("#run-file input, #run-file textarea").first.fill("labels.json")
    page.locator("#run-file-show").click()
    page.locator("#run-file-text").get_by_text("id2label").first.wait_for()


def test_a_corrupt_run_says_so_and_the_page_stays_up(page, server):
    _open(page, server, query="?run=broken")
    page.locator("#run-status").get_by_text("corrupt").wait_for()
    assert "config.yaml cannot be read" in _text(page, "run-status")
    _choose(page, "run-id", "half-written")
    page.locator("#run-status").get_by_text("half-written").first.wait_for()
    assert "corrupt" in _text(page, "run-status")


def test_paths_leaving_the_root_are_refused(page, server, runs_root):
    _open(page, server, query="?run=text-bert-full")
    page.locator("#run-status").get_by_text("finished").wait_for()
    page.get_by_role("tab", name="Files").click()
    for name in ("../../../../../../etc/passwd", "leak", "/etc/passwd"):
        page.locator("#run-file input, #run-file textarea").first.fill(name)
        page.locator("#run-file-show").click()
        page.locator("#run-file-text").get_by_text("Refused").first.wait_for()
        assert "root:" not in _text(page, "run-file-text")
    _choose(page, "run-id", "../../../../../../etc")
    page.locator("#run-status").get_by_text("Refused").wait_for()
    # nor does Gradio serve files of the root (or anything else) by itself
    for path in (runs_root / "text-bert-full" / "config.yaml", runs_root / "text-bert-full" / "leak",
                 Path("/etc/passwd")):
        try:
            with urllib.request.urlopen(f"{server}gradio_api/file={path}", timeout=10) as response:
                body, status = response.read(), response.status
        except urllib.error.HTTPError as err:
            body, status = b"", err.code
        assert status >= 400 and b"root:" not in body and b"task:" not in body, (path, status)


# -- Try ------------------------------------------------------------------------------------------
def test_try_predicts_the_way_each_task_shows_it(page, server, runs_root):
    _open(page, server, tab="Try")
    _choose(page, "try-run", "text-bert-full")
    page.locator("#try-about").get_by_text("labels: neg, pos").wait_for()
    page.locator("#try-inputs textarea").fill("a lovely and charming story\nawful and boring")
    page.locator("#try-predict").click()
    page.locator("#try-result").get_by_text("awful and boring").wait_for()
    assert re.search(r"→ (pos|neg) \(0\.\d{3}\)", _text(page, "try-result"))
    bars = page.locator("#try-bars")
    bars.get_by_text("neg").first.wait_for()
    assert "pos" in bars.inner_text()
    _shot(page, "try")

    _choose(page, "try-run", "ner-bert-lora")
    page.locator("#try-about").get_by_text("ner-bert-lora").wait_for()
    page.locator("#try-inputs textarea").fill("alice went to new york")
    page.locator("#try-predict").click()
    page.locator("#try-result").get_by_text("alice went to new york").wait_for()
    page.locator("#try-spans").get_by_text("alice").first.wait_for()  # the text, with its entity spans

    _choose(page, "try-run", "clm-gpt2-lora")
    page.locator("#try-about").get_by_text("clm-gpt2-lora").wait_for()
    page.locator("#try-inputs textarea").fill("the film was")
    page.locator("#try-predict").click()
    page.locator("#try-result").get_by_text("the film was").wait_for()
    assert len(_text(page, "try-result")) > len("the film was")  # the continuation follows the prompt

    _choose(page, "try-run", "image-vit-freeze")
    page.locator("#try-about").get_by_text("takes images").wait_for()
    image = next((runs_root / "data" / "images-test" / "red").glob("*.png"))
    page.locator("#try-image input[type=file]").set_input_files(str(image))
    page.wait_for_timeout(500)
    page.locator("#try-predict").click()
    page.locator("#try-result").get_by_text("image →").wait_for()
    assert re.search(r"→ (red|green|blue) \(", _text(page, "try-result"))
    _shot(page, "try-image")


# -- Train ----------------------------------------------------------------------------------------
TRAIN_YAML = """\
task: text-classification
model:
  name_or_path: models/tiny-bert
  stratgy: full
data:
  train: data/missing.tsv
  validation: data/dev.tsv
  text_column: sentence
  label_column: label
  max_length: 32
training:
  max_steps: 100000
  learning_rate: -1
  per_device_train_batch_size: 8
  logging_steps: 1
  eval_strategy: "no"
  save_strategy: "no"
speed:
  bf16: false
"""


def _type(page, elem_id: str, text: str):
    """Type into a form field key by key, as a user does (each key is an input event)."""
    box = page.locator(f"#{elem_id} textarea, #{elem_id} input").first
    box.fill("")
    box.press_sequentially(text)


def _step(page) -> int:
    found = re.search(r"step (\d+)", _text(page, "train-progress"))
    return int(found.group(1)) if found else 0


def test_train_validates_launches_watches_stops_and_resumes(page, server, runs_root):
    _open(page, server, tab="Train")
    page.locator("#train-name input, #train-name textarea").first.fill("live-run")
    _set_code(page, "train-yaml", TRAIN_YAML)
    sync_api.expect(page.locator("#train-train textarea, #train-train input").first).to_have_value(
        "data/missing.tsv", timeout=WAIT_MS)
    page.locator("#train-validate").click()
    page.locator("#train-problems").get_by_text("3 problem(s)").wait_for()  # every problem at once
    problems = _text(page, "train-problems")
    assert "stratgy" in problems and "learning_rate" in problems and "missing.tsv" in problems
    assert "learning_rate" in _text(page, "train-note-learning_rate")  # beside its field
    # the form edits the YAML: fix the data and the learning rate there
    _type(page, "train-train", "data/train.tsv")
    _type(page, "train-learning_rate", "0.005")
    page.locator("#train-yaml").get_by_text("learning_rate: 0.005").wait_for()
    yaml_text = page.locator("#train-yaml .cm-content").inner_text()
    assert "data/train.tsv" in yaml_text and "learning_rate: -1" not in yaml_text
    _set_code(page, "train-yaml", page.locator("#train-yaml .cm-content").inner_text().replace("stratgy", "strategy"))
    page.locator("#train-validate").click()
    page.locator("#train-problems").get_by_text("No problems").wait_for()

    page.locator("#train-launch").click()
    page.locator("#train-job-result").get_by_text("Queued job").wait_for()
    page.locator("#train-progress").get_by_text("last loss").wait_for()
    first = _step(page)
    page.wait_for_function("n => /step (\\d+)/.test(document.querySelector('#train-progress').innerText) && "
                           "+document.querySelector('#train-progress').innerText.match(/step (\\d+)/)[1] > n", arg=first)
    page.locator("#train-loss canvas, #train-loss svg").first.wait_for()  # the live loss curve is drawn
    _shot(page, "train")
    page.locator("#train-stop").click()
    page.locator("#train-progress").get_by_text("stopped").wait_for()
    stopped_at = _step(page)
    assert "exit status 130" in _text(page, "train-progress")
    assert (runs_root / "live-run" / f"checkpoint-{stopped_at}" / "trainer_state.json").is_file()
    assert "training stopped by SIGINT" in page.locator("#train-log textarea").input_value()

    page.get_by_role("tab", name="Runs").click()
    page.locator("#runs-refresh").click()
    page.locator("#runs-table [role=row]", has_text="live-run").get_by_text("interrupted").wait_for()

    page.get_by_role("tab", name="Train").click()
    _choose(page, "train-resumable", "live-run")
    page.locator("#train-resume-set textarea").fill(f"training.max_steps={stopped_at + 3}")
    page.locator("#train-resume").click()
    page.locator("#train-job-result").get_by_text("resume live-run").wait_for()
    page.locator("#train-jobs [role=row]", has_text="--resume").get_by_text("finished").wait_for(timeout=3 * WAIT_MS)
    assert (runs_root / "live-run" / "metrics.json").is_file()
    page.get_by_role("tab", name="Runs").click()
    page.locator("#runs-refresh").click()
    page.locator("#runs-table [role=row]", has_text="live-run").get_by_text("finished").wait_for()


# -- Compare --------------------------------------------------------------------------------------
def test_compare_shows_the_metric_table_the_config_diff_and_the_curves(page, server):
    _open(page, server, tab="Compare")
    for name in ("text-bert-full", "text-seeds"):
        box = page.locator("#compare-runs input").first
        box.click()
        box.fill(name)
        box.press("Enter")
    page.locator("#compare-go").click()
    page.locator("#compare-note").get_by_text("2 runs").wait_for()
    diff = _text(page, "compare-diff")
    assert "training.num_train_epochs" in diff and "training.per_device_train_batch_size" in diff
    assert "13, 14" in diff  # the seed group's seeds
    assert re.search(r"\d\.\d{4} ± \d\.\d{4}", _text(page, "compare-table"))  # the seed group's mean ± std
    page.locator("#compare-loss canvas, #compare-loss svg").first.wait_for()  # the curves overlaid
    _shot(page, "compare")


def test_export_asks_for_confirmation_then_writes_through_hftl_export(page, server, runs_root):
    _open(page, server, query="?run=text-bert-full")
    page.get_by_role("tab", name="Export and push").click()
    page.locator("#run-target textarea, #run-target input").first.fill("exports/text-merged")
    page.locator("#run-merged").click()
    page.locator("#run-confirm-text").get_by_text("exports/text-merged").wait_for()
    page.locator("#run-cancel").click()
    page.locator("#run-action-result").get_by_text("Cancelled").wait_for()
    assert not (runs_root / "exports" / "text-merged").exists()
    page.locator("#run-merged").click()
    page.locator("#run-confirm").click()
    page.locator("#run-action-result").get_by_text("Written").wait_for()
    assert (runs_root / "exports" / "text-merged" / "config.json").is_file()
    page.locator("#run-target textarea, #run-target input").first.fill("../../outside")
    page.locator("#run-onnx").click()
    page.locator("#run-confirm").click()
    page.locator("#run-action-result").get_by_text("outside the runs folder").wait_for()


# -- Tune -----------------------------------------------------------------------------------------
def test_tune_shows_a_studys_trials_and_figures(page, server):
    _open(page, server, tab="Tune")
    _choose(page, "tune-study", "study")
    page.locator("#tune-progress").get_by_text("5 trials").wait_for()
    progress = _text(page, "tune-progress")
    assert "3 complete" in progress and "1 pruned" in progress and "1 running" in progress
    assert "maximize validation f1" in progress
    trials = _text(page, "tune-trials")
    assert "training.learning_rate" in trials and "0.74" in trials
    page.locator("#tune-figures img[src^='data:image/png']").first.wait_for()  # Optuna's figures
    _shot(page, "tune")
