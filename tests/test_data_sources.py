"""Data sources: what is a file, what is a Hub id, and headerless CSV/TSV files (`data.column_names`).

One reading rule for delimited files (hftl.data.tables) is shared by the checks and the loader, so both
see the same rows.
"""

from __future__ import annotations

import logging

import pytest
import yaml

from hftl.cli import main
from hftl.data import check_source, load_splits, read_columns
from hftl.data.checks import check_rows
from hftl.errors import DataError
from hftl.tasks.text_classification import TextClassificationData
from tests.conftest import make_sentences, write_tsv


def _headerless(path, rows):
    path.write_text("".join(f"{text}\t{label}\n" for text, label in rows), encoding="utf-8")
    return path


# -- what a missing source is --------------------------------------------------------------------
@pytest.mark.parametrize("source", ["data.xlsx", "train.xls", "owner/data.xlsx", "my-data.feather"])
def test_missing_file_with_an_unknown_extension_is_an_error_naming_the_formats(tmp_path, monkeypatch, source):
    monkeypatch.chdir(tmp_path)
    problems = check_source(source, "data.train")
    assert len(problems) == 1, problems
    message = problems[0]
    assert message.startswith(f"data.train: {source}")
    assert "does not exist" in message
    for supported in (".csv", ".tsv", ".jsonl", ".parquet"):
        assert supported in message


@pytest.mark.parametrize("source", ["a/b/c", "data//train", "some..name", "-bad-"])
def test_missing_path_that_is_not_hub_shaped_is_an_error(tmp_path, monkeypatch, source):
    monkeypatch.chdir(tmp_path)
    problems = check_source(source, "data.train")
    assert problems and "does not exist" in problems[0] and "Hub dataset id" in problems[0]


@pytest.mark.parametrize("source", ["imdb", "stanfordnlp/sst2", "user/dataset-v1.2"])
def test_hub_shaped_id_passes_with_a_notice(tmp_path, monkeypatch, caplog, source):
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="hftl.data.loading"):
        assert check_source(source, "data.train") == []
    notices = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(source in n and "Hub dataset id" in n and "offline" in n for n in notices), notices


def test_validate_reports_an_unsupported_extension_and_notes_a_hub_id(tmp_path, text_config, capsys, caplog):
    config = text_config(**{"data.train": str(tmp_path / "data.xlsx")})
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "data.xlsx does not exist" in err and ".csv" in err

    config = text_config(**{"data.train": "someone/sst2", "data.validation": None, "data.test": None})
    path.write_text(yaml.safe_dump(config))
    with caplog.at_level(logging.WARNING):
        assert main(["validate", str(path)]) == 0
    assert "OK" in capsys.readouterr().out
    notices = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("data.train: 'someone/sst2'" in n and "offline" in n for n in notices), notices


# -- headerless files -----------------------------------------------------------------------------
def test_column_names_is_a_data_setting(tmp_path):
    from hftl import load_config
    from hftl.errors import ConfigError

    base = {"task": "text-classification", "model": {"name_or_path": "x"},
            "data": {"train": "t.tsv"}, "training": {"output_dir": str(tmp_path / "run")}}
    data = TextClassificationData(train="t.tsv", column_names=["text", "label"])
    assert data.column_names == ["text", "label"]
    for bad, expected in (([], "must name at least one column"), (["text", "text"], "'text' twice")):
        with pytest.raises(ValueError, match=expected):
            TextClassificationData(train="t.tsv", column_names=bad)
    with pytest.raises(ConfigError, match="data.column_names"):
        load_config({**base, "data": {"train": "t.tsv", "column_names": "text,label"}}, check=False)


def test_headerless_tsv_loads_and_passes_the_checks(tmp_path):
    rows = make_sentences(40, seed=5)
    path = _headerless(tmp_path / "train.tsv", rows)
    names = ["text", "label"]
    data = TextClassificationData(train=str(path), column_names=names)

    assert check_source(str(path), "data.train", column_names=names) == []
    assert read_columns(str(path), column_names=names) == names
    assert check_rows(data, ["text"], "label") == []

    splits = load_splits(data, seed=0)
    assert splits["train"].column_names == names
    assert len(splits["train"]) + len(splits["validation"]) == len(rows)  # the first line is data, not a header
    loaded = set(zip(splits["train"]["text"], splits["train"]["label"])) | set(
        zip(splits["validation"]["text"], splits["validation"]["label"]))
    assert rows[0] in loaded


def test_without_column_names_the_first_line_is_the_header(tmp_path):
    rows = make_sentences(40, seed=5)
    path = _headerless(tmp_path / "train.tsv", rows)
    assert read_columns(str(path)) == list(rows[0])
    splits = load_splits(TextClassificationData(train=str(path)), seed=0)
    assert len(splits["train"]) + len(splits["validation"]) == len(rows) - 1


def test_headerless_csv_keeps_quoted_commas(tmp_path):
    path = tmp_path / "train.csv"
    lines = ['"good, really good",pos\n', "bad,neg\n"] * 10
    path.write_text("".join(lines), encoding="utf-8")
    names = ["text", "label"]
    data = TextClassificationData(train=str(path), column_names=names, validation_fraction=0.5)
    assert check_source(str(path), "data.train", column_names=names) == []
    assert check_rows(data, ["text"], "label") == []
    splits = load_splits(data, seed=0)
    assert "good, really good" in set(splits["train"]["text"])


def test_column_names_that_do_not_fit_the_rows_are_reported(tmp_path):
    path = _headerless(tmp_path / "train.tsv", make_sentences(10, seed=5))
    names = ["text", "label", "source"]
    with pytest.raises(DataError, match=r"line 1 has 2 tab-separated fields.*data.column_names names 3"):
        read_columns(str(path), column_names=names)
    problems = check_source(str(path), "data.train", column_names=names)
    assert len(problems) == 1 and "data.column_names" in problems[0] and "3" in problems[0]


def test_column_names_on_a_file_with_a_header_is_reported(tmp_path):
    path = write_tsv(tmp_path / "train.tsv", make_sentences(10, seed=5), header=("text", "label"))
    problems = check_source(str(path), "data.train", column_names=["text", "label"])
    assert len(problems) == 1 and "line 1" in problems[0] and "header" in problems[0]


def test_checks_and_loader_read_a_tsv_with_a_lone_quote_alike(tmp_path):
    from hftl.data.checks import read_table
    from hftl.data.tables import open_table, read_header

    rows = [('he said "wow and left', "pos"), ("plain", "neg"), ('"quoted" start', "pos"), ("end", "neg")] * 3
    path = write_tsv(tmp_path / "train.tsv", rows, header=("text", "label"))
    table = read_table(str(path))
    with open_table(path) as reader:
        dict_rows = [(row["text"], row["label"]) for row in reader]
    assert read_header(path) == ["text", "label"]
    assert dict_rows == rows
    assert table.values["text"] == [t for t, _ in rows]
    data = TextClassificationData(train=str(path), column_names=None, validation_fraction=0.25)
    splits = load_splits(data, seed=0)
    assert sorted([*splits["train"]["text"], *splits["validation"]["text"]]) == sorted(t for t, _ in rows)
