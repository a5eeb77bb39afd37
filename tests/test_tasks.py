"""Every task on the real files of ../shared/data: row counts, rendering, split policy, few-shot and hub rows."""

import json
from collections import Counter
from pathlib import Path

import pytest

from lamp_engine.config import DataConfig
from lamp_engine.errors import TaskError
from lamp_engine.tasks import TASKS, Example, get_task
from lamp_engine.tasks.sources import Row, read_jsonl, read_labelled_lines
from lamp_engine.tasks.splitting import hold_out

DATA = (Path(__file__).resolve().parents[1].parent / "shared" / "data").resolve()
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"benchmark data folder {DATA} not present")

LOCAL_TASKS = ("cb", "wsc", "copa", "rte", "wic", "boolq", "multirc", "record", "sst2")
HUB_ONLY_TASKS = ("mnli", "qnli", "mrpc")

FILE_ROWS = {  # from ../shared/data/README.md
    "superglue/CB/train.jsonl": 250, "superglue/CB/val.jsonl": 56,
    "superglue/RTE/train.jsonl": 2490, "superglue/RTE/val.jsonl": 277,
    "superglue/BoolQ/val.jsonl": 3270, "superglue/COPA/val.jsonl": 100, "superglue/WiC/val.jsonl": 638,
    "superglue/WSC/val.jsonl": 104, "superglue/MultiRC/val.jsonl": 83,
    **{f"superglue/{t}/{s}.jsonl": 32 for t in ("BoolQ", "CB", "COPA", "MultiRC", "RTE", "ReCoRD", "WSC", "WiC")
       for s in ("train32", "dev32")},
}
SST2_ROWS = {"train.txt": 6920, "dev.txt": 872, "test.txt": 1821}


def data(**kwargs) -> DataConfig:
    return DataConfig(data_dir=str(DATA), **kwargs)


@pytest.fixture(scope="module")
def loaded() -> dict:
    """Each local task's splits at seed 42, loaded once for the module."""
    return {name: get_task(name).load(data(), seed=42) for name in LOCAL_TASKS}


def test_registry_holds_the_papers_twelve_tasks():
    assert list(TASKS) == ["cb", "wsc", "copa", "rte", "wic", "boolq", "multirc", "record",
                           "mnli", "qnli", "sst2", "mrpc"]
    for name in TASKS:
        task = get_task(name)
        assert task.main_metric in task.metrics


def test_unknown_task_is_named():
    with pytest.raises(TaskError, match="unknown task 'sst3'"):
        get_task("sst3")


@pytest.mark.parametrize(("relative", "rows"), sorted(FILE_ROWS.items()))
def test_every_superglue_file_has_its_row_count(relative, rows):
    assert len(read_jsonl(DATA / relative)) == rows


@pytest.mark.parametrize(("name", "rows"), sorted(SST2_ROWS.items()))
def test_sst2_files_have_their_row_counts(name, rows):
    read = read_labelled_lines(DATA / "glue" / "SST-2" / name)
    assert len(read) == rows
    assert {row.fields["label"] for row in read} == {0, 1}


@pytest.mark.parametrize(("name", "train", "select", "test"), [
    ("cb", 225, 25, 56), ("rte", 2241, 249, 277), ("sst2", 6420, 500, 872),
    ("boolq", 32, 32, 3270), ("copa", 32, 32, 100), ("wic", 32, 32, 638), ("wsc", 32, 32, 104),
])
def test_split_sizes_follow_the_policy(loaded, name, train, select, test):
    splits = loaded[name]
    assert (len(splits.train), len(splits.select), len(splits.test)) == (train, select, test)


def _questions_and_answers(relative: str) -> tuple[int, int]:
    rows = [json.loads(line) for line in (DATA / relative).read_text().splitlines()]
    questions = [q for row in rows for q in row["passage"]["questions"]]
    return len(questions), sum(len(q["answers"]) for q in questions)


def test_multirc_has_one_example_per_answer_grouped_by_question(loaded):
    splits = loaded["multirc"]
    questions, answers = _questions_and_answers("superglue/MultiRC/val.jsonl")
    assert (questions, answers) == (953, 4848)
    assert len(splits.test) == answers
    assert len({e.group for e in splits.test}) == questions
    assert len(splits.train) == _questions_and_answers("superglue/MultiRC/train32.jsonl")[1]
    assert len(splits.select) == _questions_and_answers("superglue/MultiRC/dev32.jsonl")[1]
    assert {e.target for e in splits.test} == {"true", "false"}


def test_record_trains_on_each_gold_answer_and_evaluates_per_query(loaded):
    splits = loaded["record"]
    assert len(splits.test) == 32 and len({e.group for e in splits.test}) == 32
    assert len({e.group for e in splits.train} | {e.group for e in splits.select}) == 32
    assert not {e.group for e in splits.train} & {e.group for e in splits.select}
    for example in splits.test:
        assert example.target == example.gold[0] and set(example.gold) <= set(example.choices)
    # one training example per distinct gold answer of each training query
    per_query = Counter(e.group for e in splits.train)
    first = {e.group: e for e in splits.train}
    assert all(per_query[g] == len(first[g].gold) for g in per_query)
    assert {e.target for e in splits.train if e.group == splits.train[0].group} == set(splits.train[0].gold)
    assert any(len(e.gold) > 1 for e in splits.train)


@pytest.mark.parametrize("name", LOCAL_TASKS)
def test_every_example_renders_source_target_and_its_choices(loaded, name):
    splits = loaded[name]
    task = get_task(name)
    for example in splits.train + splits.select + splits.test:
        assert example.source.strip() and example.target.strip()
        assert example.target in example.choices and len(example.choices) >= 2
        assert all(choice.strip() for choice in example.choices)
        assert example.origin.startswith(str(DATA))
        if task.labels is not None:
            assert example.choices == task.labels
    perfect = task.score(splits.test, [e.target for e in splits.test])
    assert perfect[task.main_metric] == pytest.approx(100.0)


def test_templates_follow_the_text_to_text_formats(loaded):
    first = {name: loaded[name].test[0].source for name in LOCAL_TASKS}
    assert first["cb"].startswith("premise: ") and " hypothesis: " in first["cb"]
    assert first["copa"].startswith("premise: ") and " choice1: " in first["copa"] and " choice2: " in first["copa"]
    assert "question: what was the " in first["copa"]
    assert first["multirc"].startswith("question: ") and " answer: " in first["multirc"]
    assert " paragraph: " in first["multirc"]
    assert first["record"].startswith("record query: ") and " entities: " in first["record"]
    assert " passage: " in first["record"] and "@highlight" not in first["record"]
    assert first["boolq"].startswith("question: ") and " passage: " in first["boolq"]
    assert first["wic"].startswith("sentence1: ") and " word: " in first["wic"]
    assert first["sst2"] == "sentence: one long string of cliches ."
    wsc = loaded["wsc"].test[0]
    assert "*him*" in wsc.source and wsc.source.endswith("span1_text: anyone span2_text: him")


def test_copa_targets_are_the_choice_texts(loaded):
    example = loaded["copa"].test[0]
    assert example.choices == ("The toilet filled with water.", "Water flowed from the spout.")
    assert example.target == "Water flowed from the spout."  # label 1


def test_verbalizers_are_words(loaded):
    for name in ("cb", "rte", "boolq", "wic", "wsc", "sst2", "multirc", "mnli", "qnli", "mrpc"):
        labels = get_task(name).labels
        assert labels and all(label.isalpha() for label in labels), name
    assert Counter(e.target for e in loaded["cb"].test) == {"contradiction": 28, "entailment": 23, "neutral": 5}
    assert Counter(e.target for e in loaded["boolq"].test) == {"yes": 2033, "no": 1237}


def test_split_policy_names_the_files(loaded):
    cb = loaded["cb"].policy
    assert cb["source"] == f"local folder {DATA}"
    assert cb["train"].startswith("superglue/CB/train.jsonl less the selection hold-out")
    assert cb["select"] == "held out of superglue/CB/train.jsonl (seed 42) (25 examples)"
    assert cb["test"] == "superglue/CB/val.jsonl (56 examples)"
    boolq = loaded["boolq"].policy
    assert (boolq["train"], boolq["select"], boolq["test"]) == (
        "superglue/BoolQ/train32.jsonl (32 examples)", "superglue/BoolQ/dev32.jsonl (32 examples)",
        "superglue/BoolQ/val.jsonl (3270 examples)")
    assert loaded["record"].policy["test"] == "superglue/ReCoRD/dev32.jsonl (32 examples)"


def test_hold_out_is_seeded_and_disjoint(loaded):
    again = get_task("cb").load(data(), seed=42)
    assert again.select == loaded["cb"].select and again.train == loaded["cb"].train
    other = get_task("cb").load(data(), seed=7)
    assert other.select != loaded["cb"].select
    assert not set(other.select) & set(other.train)


def test_hold_out_keeps_a_questions_answers_together(loaded):
    kept, held = hold_out(loaded["multirc"].test, seed=3)
    assert len(kept) + len(held) == 4848
    assert not {e.group for e in kept} & {e.group for e in held}
    assert len({e.group for e in held}) == 95  # 10% of 953 questions


def test_k_shot_per_class_samples_k_of_each_class_reproducibly():
    splits = get_task("cb").load(data(k_shot=4, k_shot_per_class=True), seed=1)
    assert Counter(e.target for e in splits.train) == {"entailment": 4, "contradiction": 4, "neutral": 4}
    assert Counter(e.target for e in splits.select) == {"entailment": 4, "contradiction": 4, "neutral": 2}
    assert len(splits.test) == 56
    assert "4 of each class" in splits.policy["k_shot"]
    assert get_task("cb").load(data(k_shot=4, k_shot_per_class=True), seed=1).train == splits.train
    assert get_task("cb").load(data(k_shot=4, k_shot_per_class=True), seed=2).train != splits.train


def test_k_shot_samples_k_in_all_balanced_over_the_classes_as_depts_code():
    full = get_task("cb").load(data(), seed=1)
    assert Counter(e.target for e in full.train) == {"contradiction": 107, "entailment": 104, "neutral": 14}
    extra = set()
    for seed in (1, 2, 3):  # neutral is 6 % of CB's training split; 16 = 3 x 5 + 1
        cb = get_task("cb").load(data(k_shot=16), seed=seed)
        counts = Counter(e.target for e in cb.train)
        assert len(cb.train) == len(cb.select) == 16 and len(cb.test) == 56
        assert sorted(counts.values()) == [5, 5, 6]  # K // C each, the one left over to a class the seed picks
        extra.add(counts.most_common(1)[0][0])
    assert extra == {"contradiction", "neutral"}  # seeds 1 and 3 gave it to contradiction, seed 2 to neutral
    assert "16 in all, balanced over the classes (K // C each, the rest by the seed)" in cb.policy["k_shot"]
    assert get_task("cb").load(data(k_shot=16), seed=3).train == cb.train
    short = get_task("cb").load(data(k_shot=32), seed=1)  # a class that runs out leaves its share to the others
    assert Counter(e.target for e in short.train) == {"contradiction": 11, "entailment": 11, "neutral": 10}
    assert Counter(e.target for e in short.select) == {"contradiction": 12, "entailment": 11, "neutral": 2}


@pytest.mark.parametrize("per_class", [False, True])
def test_k_shot_keeps_multirc_questions_whole_in_both_modes(per_class):
    multirc = get_task("multirc")
    full = multirc.load(data(), seed=3)
    answers = Counter(e.group for e in full.train + full.select)
    shot = multirc.load(data(k_shot=16, k_shot_per_class=per_class), seed=3)
    assert len(shot.train) == (32 if per_class else 16)  # whole questions filled the room exactly here
    for split in (shot.train, shot.select):
        assert all(answers[group] == count for group, count in Counter(e.group for e in split).items())
    labels = Counter(e.target for e in shot.train)
    assert abs(labels["true"] - labels["false"]) <= 4  # as balanced as whole questions allow


def test_k_shot_without_classes_samples_k_in_all():
    copa = get_task("copa").load(data(k_shot=8), seed=5)
    assert len(copa.train) == len(copa.select) == 8
    record = get_task("record").load(data(k_shot=4), seed=5)
    assert len({e.group for e in record.train}) == 4


def test_max_train_examples_caps_the_training_split():
    splits = get_task("rte").load(data(max_train_examples=100), seed=0)
    assert len(splits.train) == 100 and len(splits.test) == 277
    assert splits.policy["max_train_examples"] == "100"


@pytest.mark.parametrize("name", HUB_ONLY_TASKS)
def test_tasks_without_local_files_name_the_missing_sources(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    task = get_task(name)
    with pytest.raises(TaskError) as error:
        task.load(data(), seed=0)
    message = str(error.value)
    assert message.startswith(f"task {name}: no data source available")
    assert f"glue/{name.upper()}" in message and f"nyu-mll/glue:{name}" in message and "HF_HUB_OFFLINE" in message


def test_no_local_folder_and_no_hub_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TaskError, match=r"^task cb: no data source available\. Local: no usable files in .*"
                                        r"Hub aps/super_glue:cb: offline mode is set"):
        get_task("cb").load(DataConfig(data_dir=str(tmp_path)), seed=0)
    with pytest.raises(TaskError, match="Local: no --data-dir given"):
        get_task("cb").load(DataConfig(), seed=0)


def _local_row(relative: str, line: int = 0) -> dict:
    return json.loads((DATA / relative).read_text().splitlines()[line])


def test_hub_multirc_rows_render_like_local_rows():
    local = _local_row("superglue/MultiRC/val.jsonl")
    task = get_task("multirc")
    expected = task.render(Row(local, "local"))
    passage = local["passage"]
    hub_rows = [Row({"paragraph": passage["text"], "question": q["question"], "answer": a["text"],
                     "idx": {"paragraph": local["idx"], "question": q["idx"], "answer": a["idx"]},
                     "label": a["label"]}, "hub")
                for q in passage["questions"] for a in q["answers"]]
    rendered = [e for row in hub_rows for e in task.render(row)]
    assert [(e.source, e.target, e.group) for e in rendered] == [(e.source, e.target, e.group) for e in expected]


def test_hub_record_rows_render_like_local_rows():
    local = _local_row("superglue/ReCoRD/dev32.jsonl")
    task = get_task("record")
    [expected] = task.render(Row(local, "local"))
    text = local["passage"]["text"]
    qa = local["qas"][0]
    hub = {"passage": text, "query": qa["query"],
           "entities": [text[s["start"]:s["end"] + 1] for s in local["passage"]["entities"]],
           "entity_spans": {}, "answers": [a["text"] for a in qa["answers"]],
           "idx": {"passage": local["idx"], "query": qa["idx"]}}
    [rendered] = task.render(Row(hub, "hub"))
    assert (rendered.source, rendered.gold, rendered.choices, rendered.group) == (
        expected.source, expected.gold, expected.choices, expected.group)


def test_hub_wsc_and_class_label_rows_render_like_local_rows():
    local = _local_row("superglue/WSC/val.jsonl", 1)
    hub = {"text": local["text"], **local["target"], "idx": local["idx"], "label": int(local["label"])}
    wsc = get_task("wsc")
    assert wsc.render(Row(hub, "hub"))[0].source == wsc.render(Row(local, "local"))[0].source
    assert wsc.render(Row(hub, "hub"))[0].target == "yes"
    cb_local = _local_row("superglue/CB/val.jsonl")
    cb = get_task("cb")
    cb_hub = {**cb_local, "label": cb.label_names.index(cb_local["label"])}
    assert cb.render(Row(cb_hub, "hub")) == cb.render(Row(cb_local, "hub"))


def test_examples_are_hashable_values():
    example = Example("s", "t", ("t", "u"))
    assert example.gold == ("t",)
    assert {example, Example("s", "t", ("t", "u"))} == {example}
