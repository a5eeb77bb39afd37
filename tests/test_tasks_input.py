"""Bad input gives one TaskError naming the file and line; the custom task maps any labels to words."""

import json
from collections import Counter
from pathlib import Path

import pytest

from lamp_engine.config import DataConfig
from lamp_engine.errors import TaskError
from lamp_engine.tasks import Example, describe_truncation, get_task

CB_ROWS = [{"premise": f"premise {i}", "hypothesis": f"hypothesis {i}",
            "label": ("entailment", "contradiction", "neutral")[i % 3], "idx": i} for i in range(30)]


def write_jsonl(path: Path, rows: list, extra_lines: tuple[str, ...] = ()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(row) for row in rows] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def cb_folder(root: Path, val_rows: list | None = None, val_extra: tuple[str, ...] = ()) -> DataConfig:
    write_jsonl(root / "superglue" / "CB" / "train.jsonl", CB_ROWS)
    write_jsonl(root / "superglue" / "CB" / "val.jsonl", CB_ROWS[:6] if val_rows is None else val_rows, val_extra)
    return DataConfig(data_dir=str(root))


def load_error(task: str, data: DataConfig) -> str:
    with pytest.raises(TaskError) as error:
        get_task(task).load(data, seed=0)
    return str(error.value)


def test_a_small_local_folder_loads(tmp_path):
    splits = get_task("cb").load(cb_folder(tmp_path), seed=0)
    assert (len(splits.train), len(splits.select), len(splits.test)) == (27, 3, 6)


def test_empty_file_is_named(tmp_path):
    data = cb_folder(tmp_path)
    (tmp_path / "superglue" / "CB" / "val.jsonl").write_text("\n\n")
    assert load_error("cb", data) == f"{tmp_path}/superglue/CB/val.jsonl: the file is empty"


def test_malformed_json_line_is_named(tmp_path):
    data = cb_folder(tmp_path, val_extra=('{"premise": "p", "hypothesis": ',))
    message = load_error("cb", data)
    assert message.startswith(f"{tmp_path}/superglue/CB/val.jsonl, line 7: malformed JSON")


def test_json_line_that_is_not_an_object_is_named(tmp_path):
    data = cb_folder(tmp_path, val_extra=("[1, 2]",))
    assert load_error("cb", data).endswith("val.jsonl, line 7: expected a JSON object, got list")


def test_label_outside_the_label_set_is_named(tmp_path):
    rows = [*CB_ROWS[:2], {**CB_ROWS[2], "label": "maybe"}]
    message = load_error("cb", cb_folder(tmp_path, val_rows=rows))
    assert message == (f"{tmp_path}/superglue/CB/val.jsonl, line 3: label 'maybe' is not one of entailment, "
                       "contradiction, neutral (or their indices 0-2)")


def test_missing_field_is_named(tmp_path):
    rows = [CB_ROWS[0], {k: v for k, v in CB_ROWS[1].items() if k != "hypothesis"}]
    message = load_error("cb", cb_folder(tmp_path, val_rows=rows))
    assert message == f"{tmp_path}/superglue/CB/val.jsonl, line 2: missing field 'hypothesis'"


def test_blank_lines_keep_line_numbers_true(tmp_path):
    path = tmp_path / "superglue" / "CB" / "val.jsonl"
    data = cb_folder(tmp_path)
    bad = {**CB_ROWS[0], "label": "unknown"}
    path.write_text(json.dumps(CB_ROWS[0]) + "\n\n" + json.dumps(bad) + "\n")
    assert "val.jsonl, line 3: label 'unknown'" in load_error("cb", data)


def test_bad_sst2_line_is_named(tmp_path):
    folder = tmp_path / "glue" / "SST-2"
    folder.mkdir(parents=True)
    (folder / "train.txt").write_text("".join(f"{i % 2} sentence {i}\n" for i in range(20)))
    (folder / "dev.txt").write_text("1 fine\nno label here\n")
    message = load_error("sst2", DataConfig(data_dir=str(tmp_path)))
    assert message == f"{folder}/dev.txt, line 2: expected '<label> <sentence>'"


def test_local_glue_tsv_files_are_read(tmp_path):
    folder = tmp_path / "glue" / "MRPC"
    folder.mkdir(parents=True)
    header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    lines = [f"{i % 2}\t{i}\t{i + 100}\tA \"quoted\" sentence {i} .\tAnother sentence {i} .\n" for i in range(20)]
    (folder / "train.tsv").write_text(header + "".join(lines))
    (folder / "dev.tsv").write_text(header + "".join(lines[:4]))
    splits = get_task("mrpc").load(DataConfig(data_dir=str(tmp_path)), seed=0)
    assert (len(splits.train), len(splits.select), len(splits.test)) == (18, 2, 4)
    assert splits.test[1].source == 'sentence1: A "quoted" sentence 1 . sentence2: Another sentence 1 .'
    assert [e.target for e in splits.test] == ["no", "yes", "no", "yes"]
    assert splits.policy["test"] == "glue/MRPC/dev.tsv (4 examples)"


def test_describe_truncation_names_the_long_examples():
    examples = [Example(f"s{i}", "t", ("t", "u"), origin=f"f.jsonl, line {i + 1}") for i in range(5)]
    count, message = describe_truncation(examples, [False, True, False, True, False], max_length=256)
    assert count == 2
    assert message == ("2 of 5 source texts are longer than 256 tokens and were truncated (raise "
                       "--max-source-length to keep more): f.jsonl, line 2; f.jsonl, line 4")
    assert describe_truncation(examples, [False] * 5, 256) == (0, "")


# --- the custom task -------------------------------------------------------------------------------------------


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def sentiment_rows(n: int = 40) -> list[str]:
    return [f"\"review number {i}, {'great' if i % 2 else 'awful'}\",{i % 2}" for i in range(n)]


def test_custom_csv_with_verbalizers(tmp_path):
    train = write_csv(tmp_path / "train.csv", "review,stars", sentiment_rows())
    data = DataConfig(train_file=str(train), text_column="review", label_column="stars",
                      verbalizers="0=negative,1=positive")
    task = get_task("custom")
    splits = task.load(data, seed=0)
    assert task.labels == ("negative", "positive")
    assert (len(splits.train), len(splits.select), len(splits.test)) == (33, 3, 4)
    assert not set(splits.train) & set(splits.test) and not set(splits.select) & set(splits.test)
    example = next(e for e in splits.train if e.source == "review: review number 3, great")
    assert (example.target, example.choices) == ("positive", ("negative", "positive"))
    assert example.origin == f"{train}, line 5"
    assert splits.policy["verbalizers"] == "0=negative, 1=positive"
    assert splits.policy["test"] == f"held out of {train} (seed 1) (4 examples)"
    assert task.score(splits.test, [e.target for e in splits.test]) == {"accuracy": 100.0, "macro_f1": 100.0}


def test_custom_jsonl_pair_with_boolean_labels_and_eval_file(tmp_path):
    rows = [{"q": f"question {i}", "a": f"answer {i}", "ok": bool(i % 3)} for i in range(24)]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    evaluation = write_jsonl(tmp_path / "eval.jsonl", rows[:5])
    data = DataConfig(train_file=str(train), eval_file=str(evaluation), text_column="q", text_pair_column="a",
                      label_column="ok")
    task = get_task("custom")
    splits = task.load(data, seed=3)
    assert task.labels == ("false", "true")
    assert (len(splits.train), len(splits.select), len(splits.test)) == (22, 2, 5)
    assert splits.test[0].source == "q: question 0 a: answer 0" and splits.test[0].target == "false"
    assert splits.policy["test"] == f"{evaluation} (5 examples)"


def test_custom_string_labels_are_their_own_words_and_k_shot_is_per_class(tmp_path):
    rows = [f"text {i},{('sports', 'politics', 'science')[i % 3]}" for i in range(60)]
    train = write_csv(tmp_path / "topics.csv", "text,label", rows)
    task = get_task("custom")
    splits = task.load(DataConfig(train_file=str(train), k_shot=5, k_shot_per_class=True), seed=0)
    assert task.labels == ("politics", "science", "sports")
    assert Counter(e.target for e in splits.train) == {"politics": 5, "science": 5, "sports": 5}


def test_custom_label_outside_the_verbalizers_is_named(tmp_path):
    train = write_csv(tmp_path / "t.csv", "text,label", [*sentiment_rows(10), "odd one,2"])
    with pytest.raises(TaskError) as error:
        get_task("custom").load(DataConfig(train_file=str(train), verbalizers="0=bad,1=good"), seed=0)
    assert str(error.value) == (f"{train}, line 12: label 2 is not one of 0, 1 (from --verbalizers); "
                                "fix the row or extend --verbalizers")


def test_custom_eval_label_unseen_in_training_is_named(tmp_path):
    train = write_csv(tmp_path / "t.csv", "text,label", sentiment_rows(10))
    evaluation = write_csv(tmp_path / "e.csv", "text,label", ["fine,1", "strange,7"])
    with pytest.raises(TaskError, match=rf"^{evaluation}, line 3: label 7 is not one of 0, 1 \(from the labels "):
        get_task("custom").load(DataConfig(train_file=str(train), eval_file=str(evaluation)), seed=0)


def test_custom_missing_column_lists_the_columns(tmp_path):
    train = write_csv(tmp_path / "t.csv", "sentence,label", sentiment_rows(10))
    with pytest.raises(TaskError) as error:
        get_task("custom").load(DataConfig(train_file=str(train)), seed=0)
    assert str(error.value) == (f"{train}: column 'text' not found in the header (line 1); columns are label, "
                                "sentence. Name the right one with the column flags.")


def test_custom_empty_cell_is_named(tmp_path):
    train = write_csv(tmp_path / "t.csv", "text,label", [*sentiment_rows(6), ",1"])
    with pytest.raises(TaskError, match=rf"^{train}, line 8: field 'text' is empty$"):
        get_task("custom").load(DataConfig(train_file=str(train)), seed=0)


@pytest.mark.parametrize(("content", "message"), [
    ("", "the file is empty"),
    ("text,label\n", "the file has a header but no rows"),
])
def test_custom_empty_csv(tmp_path, content, message):
    train = tmp_path / "t.csv"
    train.write_text(content)
    with pytest.raises(TaskError, match=f"^{train}: {message}$"):
        get_task("custom").load(DataConfig(train_file=str(train)), seed=0)


def test_custom_malformed_jsonl_is_named(tmp_path):
    train = write_jsonl(tmp_path / "t.jsonl", [{"text": "a", "label": 1}], ("{oops",))
    with pytest.raises(TaskError, match=rf"^{train}, line 2: malformed JSON"):
        get_task("custom").load(DataConfig(train_file=str(train)), seed=0)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({}, "task custom: no train_file; pass --train-file"),
    ({"train_file": "/nonexistent/file.csv"}, "train_file: file /nonexistent/file.csv not found"),
    ({"verbalizers": "0:negative"}, "verbalizers: expected label=word pairs"),
    ({"verbalizers": "0=same,1=same"}, "verbalizers: two labels map to the same word"),
])
def test_custom_configuration_errors(tmp_path, kwargs, message):
    train = write_csv(tmp_path / "t.csv", "text,label", sentiment_rows(10))
    values = {"train_file": str(train), **kwargs} if "train_file" in kwargs or kwargs else {}
    with pytest.raises(TaskError, match=f"^{message}"):
        get_task("custom").load(DataConfig(**values), seed=0)


def test_custom_single_label_file_is_refused(tmp_path):
    train = write_csv(tmp_path / "t.csv", "text,label", [f"text {i},pos" for i in range(5)])
    with pytest.raises(TaskError, match="holds one label only"):
        get_task("custom").load(DataConfig(train_file=str(train)), seed=0)


def test_custom_unsupported_extension(tmp_path):
    train = tmp_path / "t.parquet"
    train.write_text("x")
    with pytest.raises(TaskError, match=r"unsupported file type \.parquet"):
        get_task("custom").load(DataConfig(train_file=str(train)), seed=0)
