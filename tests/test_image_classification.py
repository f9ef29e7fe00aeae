"""Image classification on a tiny ViT built here and small PNG sets written here: every strategy trains, saves,
reloads and predicts; merged LoRA equals the adapter; bad images and folders fail early, naming the file."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hftl import ImageClassificationRecipe
from hftl import load_config
from hftl.errors import ConfigError, DataError
from hftl.inference import load
from hftl.runner import run_recipe
from hftl.tasks.image_classification import random_resized_crop, to_rgb
from conftest import with_changes

COLOURS = {"blue": (40, 60, 220), "green": (40, 200, 60), "red": (220, 50, 40)}
REPO = Path(__file__).resolve().parents[1]


def colour_image(colour, rng, size=12, mode="RGB") -> Image.Image:
    """A noisy image of one dominant colour: a task a tiny ViT learns in a few epochs."""
    pixels = np.clip(np.array(colour) + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    return image if mode == "RGB" else image.convert(mode)


def write_folder(root: Path, per_class: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for label, colour in COLOURS.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            colour_image(colour, rng).save(root / label / f"{i}.png")
    return root


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: on a shared, oversubscribed CPU, torch's spinning worker threads make tiny models
    several times slower (measured: 70 s -> 11 s for `test_full_finetune_learns`)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_vit_dir(tmp_path_factory) -> Path:
    """A 2-layer ViT (hidden 32, 16x16 input, 8x8 patches) and its PIL image processor."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

    out = tmp_path_factory.mktemp("tiny-vit")
    config = ViTConfig(image_size=16, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, num_labels=2)
    torch.manual_seed(0)
    ViTForImageClassification(config).save_pretrained(out)
    ViTImageProcessorPil(size={"height": 16, "width": 16}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(out)
    return out


@pytest.fixture
def image_data(tmp_path) -> dict[str, Path]:
    return {"train": write_folder(tmp_path / "train", 16, seed=1), "test": write_folder(tmp_path / "test", 6, seed=2)}


@pytest.fixture
def image_config(tmp_path, tiny_vit_dir, image_data):
    """Returns make(**changes): an image-classification config dict; `changes` are 'section.key' -> value."""

    def make(**changes):
        config = {
            "task": "image-classification",
            "model": {"name_or_path": str(tiny_vit_dir), "strategy": "full"},
            "data": {"train": str(image_data["train"]), "test": str(image_data["test"]), "validation_fraction": 0.25},
            "training": {"output_dir": str(tmp_path / "run"), "num_train_epochs": 3, "learning_rate": 5e-3,
                         "per_device_train_batch_size": 8, "seed": 42, "logging_steps": 5, "save_strategy": "no"},
            "speed": {"bf16": False},
        }
        return with_changes(config, changes)

    return make


def problems_of(config: dict) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(config)
    return str(err.value)


# -- training, saving, reloading ------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["full", "freeze", "lora"])
def test_strategies_train_save_reload(image_config, image_data, strategy):
    config = image_config(**{"model.strategy": strategy, "model.lora": {"r": 4, "alpha": 8, "dropout": 0.0}})
    result = run_recipe(ImageClassificationRecipe(config))
    run_dir = result.run_dir
    for name in ("config.yaml", "manifest.json", "metrics.json", "labels.json", "preprocessor_config.json",
                 "confusion_matrix_test.png", "confusion_matrix_validation.png"):
        assert (run_dir / name).is_file(), name
    with Image.open(run_dir / "confusion_matrix_test.png") as png:
        assert png.format == "PNG" and png.size[0] > 200
    metrics = json.loads((run_dir / "metrics.json").read_text())
    test = metrics["test"]
    assert {"accuracy", "precision", "recall", "f1", "per_class", "confusion_matrix"} <= set(test)
    assert set(test["per_class"]) == set(COLOURS) and sum(map(sum, test["confusion_matrix"])) == 18
    assert json.loads((run_dir / "labels.json").read_text())["label2id"] == {"blue": 0, "green": 1, "red": 2}
    train = metrics["train"]
    if strategy == "full":
        assert train["trainable_params"] == train["total_params"]
    elif strategy == "freeze":
        assert train["trainable_params"] == 32 * 3 + 3  # the new classifier only: a linear probe
    else:
        adapter = json.loads((run_dir / "adapter_config.json").read_text())
        assert sorted(adapter["target_modules"]) == ["q_proj", "v_proj"]  # transformers-5 ViT attention names
        assert adapter["modules_to_save"] == ["classifier"]
        assert 0 < train["trainable_params"] < train["total_params"] * 0.5

    loaded = load(run_dir)
    assert loaded.evaluate()["accuracy"] == pytest.approx(test["accuracy"])
    paths = [image_data["test"] / "red" / "0.png", image_data["test"] / "blue" / "1.png"]
    by_path = loaded.predict([str(p) for p in paths])
    by_image = loaded.predict([Image.open(p) for p in paths])
    assert [p["label"] for p in by_path] == [p["label"] for p in by_image]
    assert all(abs(sum(p["probabilities"].values()) - 1) < 1e-5 for p in by_path)


def test_full_finetune_learns(image_config):
    result = run_recipe(ImageClassificationRecipe(image_config(**{"training.num_train_epochs": 8})))
    assert result.metrics["test"]["accuracy"] >= 0.9


def test_lora_merged_equals_adapter(image_config, image_data):
    result = run_recipe(ImageClassificationRecipe(image_config(**{"model.strategy": "lora"})))
    loaded = load(result.run_dir)
    images = [to_rgb(Image.open(p)) for p in sorted((image_data["test"] / "green").glob("*.png"))]
    pixels = loaded.processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        adapter_logits = loaded.model(pixel_values=pixels).logits
        merged = loaded.model.merge_and_unload()
        merged_logits = merged(pixel_values=pixels).logits
    assert not any("lora" in name for name, _ in merged.named_parameters())
    torch.testing.assert_close(adapter_logits, merged_logits, atol=1e-5, rtol=1e-4)


def save_backbone(kind: str, out: Path) -> Path:
    """A tiny DeiT or ResNet with its own PIL image processor (the processors differ: crop_pct, shortest edge)."""
    from transformers import (ConvNextImageProcessorPil, DeiTConfig, DeiTForImageClassification, DeiTImageProcessorPil,
                              ResNetConfig, ResNetForImageClassification)

    torch.manual_seed(0)
    if kind == "deit":
        config = DeiTConfig(image_size=16, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64)
        DeiTForImageClassification(config).save_pretrained(out)
        DeiTImageProcessorPil(size={"height": 20, "width": 20}, crop_size={"height": 16, "width": 16}).save_pretrained(out)
    else:
        config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")
        ResNetForImageClassification(config).save_pretrained(out)
        ConvNextImageProcessorPil(size={"shortest_edge": 32}).save_pretrained(out)
    return out


@pytest.mark.parametrize("kind, strategy", [("deit", "lora"), ("resnet", "freeze"), ("resnet", "full")])
def test_other_backbones(tmp_path, image_config, kind, strategy):
    model_dir = save_backbone(kind, tmp_path / kind)
    config = image_config(**{"model.name_or_path": str(model_dir), "model.strategy": strategy,
                             "training.num_train_epochs": 1})
    result = run_recipe(ImageClassificationRecipe(config))
    assert result.metrics["test"]["num_examples"] == 18
    train = result.metrics["train"]
    if strategy == "freeze":
        assert train["trainable_params"] == 16 * 3 + 3  # ResNet's head: classifier.1, 16 features -> 3 classes
    if strategy == "lora":
        assert sorted(json.loads((result.run_dir / "adapter_config.json").read_text())["target_modules"]) == ["q_proj", "v_proj"]
    assert len(load(result.run_dir).predict([Image.new("RGB", (30, 20), (200, 30, 30))])) == 1


def test_csv_of_image_paths_with_mixed_modes(tmp_path, image_config):
    """CSV rows name image files relative to the CSV; grayscale, RGBA and palette images among RGB are converted."""
    rng = np.random.default_rng(3)
    (tmp_path / "img").mkdir()
    rows, modes = [], ["RGB", "L", "RGBA", "P"]
    for i in range(24):
        label = list(COLOURS)[i % 3]
        name = f"img/{i}.png"
        colour_image(COLOURS[label], rng, mode=modes[i % 4]).save(tmp_path / name)
        rows.append(f"{name},{label}\n")
    (tmp_path / "train.csv").write_text("file,kind\n" + "".join(rows))
    config = image_config(**{"data.train": str(tmp_path / "train.csv"), "data.test": str(tmp_path / "train.csv"),
                             "data.image_column": "file", "data.label_column": "kind", "training.num_train_epochs": 1})
    result = run_recipe(ImageClassificationRecipe(config))
    assert result.metrics["test"]["num_examples"] == 24


def test_conversions_to_rgb():
    grey = Image.new("L", (4, 4), 77)
    assert to_rgb(grey).mode == "RGB" and to_rgb(grey).getpixel((0, 0)) == (77, 77, 77)
    clear = Image.new("RGBA", (4, 4), (10, 20, 30, 0))  # fully transparent: white, not the hidden colour
    assert to_rgb(clear).getpixel((0, 0)) == (255, 255, 255)
    opaque = Image.new("RGBA", (4, 4), (10, 20, 30, 255))
    assert to_rgb(opaque).getpixel((0, 0)) == (10, 20, 30)
    deep = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))  # 16-bit grayscale scaled, not clipped
    assert to_rgb(deep).getpixel((0, 0)) == (255, 255, 255)


def test_augmentation_is_on_the_fly_and_train_only(image_config):
    recipe = ImageClassificationRecipe(image_config(**{"data.augment": True, "data.crop_scale": [0.3, 0.5]}))
    data = recipe.load_data()
    processor = recipe.load_processor()
    prepared = recipe.preprocess(data, processor)
    assert prepared["train"].column_names == ["image", "labels", "example_index"]  # nothing materialised
    first, again = prepared["train"][0]["pixel_values"], prepared["train"][0]["pixel_values"]
    assert first.shape == (3, 16, 16) and torch.equal(first, again)  # a function of (seed, epoch, example)
    assert not torch.equal(first, prepared["train"][1]["pixel_values"])
    recipe.training_epoch.epoch = 1
    assert not torch.equal(first, prepared["train"][0]["pixel_values"])  # a new random crop each epoch
    assert torch.equal(prepared["test"][0]["pixel_values"], prepared["test"][0]["pixel_values"])
    rng = np.random.default_rng(0)
    image = Image.new("RGB", (20, 10))
    assert random_resized_crop(image, rng, scale=(0.2, 0.4)).size == (20, 10)


def test_head_trained_on_other_classes_is_reinitialised(image_config, tmp_path, caplog):
    """Fine-tuning a finished run on a task with as many classes but other names starts a fresh head."""
    from transformers import ViTForImageClassification

    trained = tmp_path / "colour-model"  # stands for a finished run on the colour classes
    model = ViTForImageClassification.from_pretrained(image_config()["model"]["name_or_path"], num_labels=3,
                                                      id2label=dict(enumerate(COLOURS)), ignore_mismatched_sizes=True)
    model.save_pretrained(trained)
    (trained / "preprocessor_config.json").write_bytes(
        (Path(image_config()["model"]["name_or_path"]) / "preprocessor_config.json").read_bytes())
    renamed = tmp_path / "renamed"
    for label, new in zip(COLOURS, ("x", "y", "z")):
        (renamed / new).mkdir(parents=True)
        for image in (Path(image_config()["data"]["train"]) / label).glob("*.png"):
            (renamed / new / image.name).write_bytes(image.read_bytes())
    config = image_config(**{"model.name_or_path": str(trained), "data.train": str(renamed),
                             "data.test": str(renamed), "training.output_dir": str(tmp_path / "second")})
    recipe = ImageClassificationRecipe(config)
    data = recipe.load_data()
    with caplog.at_level("INFO", logger="hftl.tasks.classification"):
        model, new = recipe.load_model(recipe.load_processor(), data.labels)
    assert "re-initialised" in caplog.text and {"classifier.weight", "classifier.bias"} <= new
    assert not torch.equal(model.classifier.weight, ViTForImageClassification.from_pretrained(trained).classifier.weight)
    assert model.config.id2label == {0: "x", 1: "y", 2: "z"}


# -- bad input ------------------------------------------------------------------------------------
def test_corrupt_image_fails_before_training_naming_the_file(image_config, image_data):
    bad = image_data["train"] / "red" / "broken.png"
    bad.write_bytes(Image.open(image_data["train"] / "red" / "0.png").tobytes()[:50])  # raw bytes, not a PNG
    truncated = image_data["train"] / "blue" / "cut.png"
    truncated.write_bytes((image_data["train"] / "blue" / "0.png").read_bytes()[:120])
    recipe = ImageClassificationRecipe(image_config())
    with pytest.raises(DataError, match="not a readable image") as err:
        run_recipe(recipe)
    assert "broken.png" in str(err.value) or "cut.png" in str(err.value)
    assert not (Path(recipe.config.output_dir) / "config.yaml").exists()  # failed before the run started


def test_non_image_file_and_empty_label_folder_are_reported(image_config, image_data):
    (image_data["train"] / "red" / "notes.txt").write_text("not an image")
    (image_data["train"] / "yellow").mkdir()
    message = problems_of(image_config())
    assert "notes.txt" in message and "not image files" in message
    assert "yellow holds no images" in message


def test_missing_path_in_csv_is_reported_with_its_row(tmp_path, image_config, image_data):
    rows = "file,label\n" + f"{image_data['train'] / 'red' / '0.png'},red\n" + "img/nowhere.png,blue\n"
    (tmp_path / "train.csv").write_text(rows)
    message = problems_of(image_config(**{"data.train": str(tmp_path / "train.csv"), "data.image_column": "file"}))
    assert "row 2" in message and "nowhere.png does not exist" in message


def test_config_mistakes_are_reported_together(tmp_path, image_config, image_data):
    (tmp_path / "train.csv").write_text("path,label\nx.png,a\n")
    message = problems_of(image_config(**{"data.image_column": "img", "data.crop_scale": [0.9, 0.2]}))
    assert "crop_scale" in message
    message = problems_of(image_config(**{"data.train": str(tmp_path / "train.csv"), "data.image_column": "file"}))
    assert "no image_column column 'file'" in message
    message = problems_of(image_config(**{"data.image_column": "picture"}))
    assert "image folder, whose columns are 'image' and 'label'" in message
    # score_range is a setting of text regression (image classification has no problem_type to set)
    message = problems_of(image_config(**{"data.score_range": [0, 5]}))
    assert "score_range" in message and "problem_type" not in message


def test_images_directly_in_the_root_folder(tmp_path, image_config):
    Image.new("RGB", (8, 8)).save(tmp_path / "loose.png")
    (tmp_path / "a").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "a" / "1.png")
    message = problems_of(image_config(**{"data.train": str(tmp_path)}))
    assert "loose.png" in message and "root/<label>/<image>" in message


def test_model_without_image_processor_is_reported(tmp_path, image_config, tiny_vit_dir):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        (bare / name).write_bytes((tiny_vit_dir / name).read_bytes())
    assert "preprocessor_config.json" in problems_of(image_config(**{"model.name_or_path": str(bare)}))


# -- the launchable recipe and the shipped configs ------------------------------------------------
def test_recipe_script_runs(tmp_path, image_config, monkeypatch, capsys):
    import yaml

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(image_config(**{"training.num_train_epochs": 1})))
    monkeypatch.setattr(sys, "argv", ["image_classification.py", "--config", str(path),
                                      "--set", f"training.output_dir={tmp_path / 'script-run'}"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / "recipes" / "image_classification.py"), run_name="__main__")
    assert exit_info.value.code == 0
    assert (tmp_path / "script-run" / "metrics.json").is_file()
    assert "test: accuracy" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["digits_vit_full", "digits_vit_freeze", "digits_vit_lora", "fashion_mnist_vit_pretrain"])
def test_shipped_configs_parse(name):
    config = load_config(REPO / "recipes" / "configs" / f"{name}.yaml", check=False)
    assert config.task == "image-classification"
