"""Image data helpers (hftl.data.images): folder and image-path checks, headerless files of image paths."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from hftl.data import load_splits
from hftl.data.images import (
    image_folder_problems,
    image_source_problems,
    missing_path_problems,
    open_image,
    read_column_values,
    to_rgb,
)
from hftl.errors import DataError
from hftl.tasks.image_classification import ImageClassificationData, ImageClassificationRecipe


def _images(folder: Path, names: list[str], colour=(200, 30, 30)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        Image.new("RGB", (8, 8), colour).save(folder / name)
        paths.append(folder / name)
    return paths


def test_the_task_module_uses_the_shared_helpers():
    import hftl.tasks.image_classification as task

    assert task.to_rgb is to_rgb and task.open_image is open_image


def test_folder_structure_problems(tmp_path):
    root = tmp_path / "train"
    _images(root / "red", ["0.png"])
    (root / "blue").mkdir()
    (root / "red" / "notes.txt").write_text("x")
    (root / "stray.png").write_bytes(b"")
    problems = " ".join(image_folder_problems(root, "data.train"))
    assert "directly in" in problems and "stray.png" in problems
    assert "notes.txt" in problems
    assert f"label folder {root / 'blue'} holds no images" in problems


def _headerless_paths(tmp_path, rows) -> Path:
    path = tmp_path / "images.csv"
    path.write_text("".join(f"{image},{label}\n" for image, label in rows), encoding="utf-8")
    return path


def test_headerless_csv_of_image_paths(tmp_path):
    red = _images(tmp_path / "img", [f"r{i}.png" for i in range(4)])
    blue = _images(tmp_path / "img", [f"b{i}.png" for i in range(4)], colour=(20, 30, 200))
    rows = [(p.relative_to(tmp_path), "red") for p in red] + [(p.relative_to(tmp_path), "blue") for p in blue]
    path = _headerless_paths(tmp_path, rows)
    names = ["image", "label"]

    assert image_source_problems(str(path), "data.train", "image", "label", column_names=names) == []
    assert read_column_values(str(path), "image", names) == [str(r[0]) for r in rows]
    without = " ".join(image_source_problems(str(path), "data.train", "image", "label"))
    assert "has no image_column column 'image'" in without  # the first line read as a header

    data = ImageClassificationData(train=str(path), column_names=names, validation_fraction=0.25)
    splits = load_splits(data, seed=0)
    assert len(splits["train"]) + len(splits["validation"]) == len(rows)
    assert sorted(splits["validation"]["label"]) == ["blue", "red"]  # stratified

    (tmp_path / red[0].relative_to(tmp_path)).unlink()
    problems = missing_path_problems(str(path), "data.train", "image", column_names=names)
    assert len(problems) == 1 and "row 1" in problems[0] and "r0.png does not exist" in problems[0]


def test_image_paths_in_a_tsv_with_a_lone_quote_in_another_column(tmp_path):
    paths = _images(tmp_path, ["a.png", "b.png", "c.png"])
    tsv = tmp_path / "images.tsv"
    tsv.write_text('image\tcaption\tlabel\na.png\tsays "hi\tx\nb.png\tplain\ty\nc.png\tend"\tx\n', encoding="utf-8")
    assert read_column_values(str(tsv), "image") == [p.name for p in paths]
    assert image_source_problems(str(tsv), "data.train", "image", "label") == []


@pytest.mark.parametrize("case", ["folder-wrong-column", "file-missing-column", "missing-path", "ok-folder", "xlsx"])
def test_image_source_problems_match_the_task_check(tmp_path, case):
    root = tmp_path / "train"
    _images(root / "red", ["0.png"])
    _images(root / "blue", ["0.png"], colour=(0, 0, 200))
    data = {"train": str(root)}
    if case == "folder-wrong-column":
        data["image_column"] = "img"
    elif case in ("file-missing-column", "missing-path"):
        csv = tmp_path / "paths.csv"
        csv.write_text("image,label\ntrain/red/0.png,red\n" + ("gone.png,blue\n" if case == "missing-path" else ""))
        data = {"train": str(csv), "label_column": "klass" if case == "file-missing-column" else "label"}
    elif case == "xlsx":
        data = {"train": str(tmp_path / "paths.xlsx")}
    config = ImageClassificationData(**data)
    ours = image_source_problems(config.train, "data.train", config.image_column, config.label_column)
    assert ours == ImageClassificationRecipe.check_data_source(config.train, "data.train", config)
    assert bool(ours) == (case != "ok-folder")


def test_open_image_names_the_file(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError, match="bad.png is not a readable image"):
        open_image(str(bad), "data.train, row 3")
    assert to_rgb(Image.new("LA", (2, 2), (0, 0))).getpixel((0, 0)) == (255, 255, 255)
