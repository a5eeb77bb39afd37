"""The paper's metrics on hand-worked cases: perfect, all wrong, partial, MultiRC grouping, ReCoRD's max over golds."""

import pytest

from lamp_engine.tasks import get_task, metrics
from lamp_engine.tasks.base import Example


def test_accuracy_perfect_wrong_and_partial():
    golds = ["yes", "no", "yes", "no"]
    assert metrics.accuracy(golds, golds) == 100.0
    assert metrics.accuracy(["no", "yes", "no", "yes"], golds) == 0.0
    assert metrics.accuracy(["yes", "yes", "yes", "no"], golds) == 75.0
    assert metrics.accuracy([], []) == 0.0


def test_macro_f1_hand_worked():
    labels = ("a", "b", "c")
    golds = ["a", "a", "b", "c"]
    assert metrics.macro_f1(golds, golds, labels) == pytest.approx(100.0)
    assert metrics.macro_f1(["b", "c", "a", "a"], golds, labels) == 0.0
    # a: tp 1, fn 1 -> 2/3; b: tp 1, fp 1 -> 2/3; c: 1 -> mean 7/9
    assert metrics.macro_f1(["a", "b", "b", "c"], golds, labels) == pytest.approx(100 * 7 / 9)


def test_macro_f1_counts_an_absent_class_as_zero():
    # 'c' never occurs nor is predicted: its F1 is 0, which is what CB's 3-class macro-F1 does
    assert metrics.macro_f1(["a", "b"], ["a", "b"], ("a", "b", "c")) == pytest.approx(100 * 2 / 3)


def test_binary_f1_of_the_positive_class():
    golds = ["true", "true", "false", "false"]
    assert metrics.binary_f1(golds, golds, "true") == 100.0
    assert metrics.binary_f1(["false", "false", "true", "true"], golds, "true") == 0.0
    # tp 1, fp 1, fn 1 -> 2 / 4
    assert metrics.binary_f1(["true", "false", "true", "false"], golds, "true") == 50.0


def test_grouped_exact_match_needs_every_answer_of_a_question_right():
    golds = ["true", "false", "true", "true", "false"]
    groups = ["q1", "q1", "q2", "q2", "q2"]
    assert metrics.grouped_exact_match(golds, golds, groups) == 100.0
    assert metrics.grouped_exact_match(["true", "false", "true", "false", "false"], golds, groups) == 50.0
    assert metrics.grouped_exact_match(["false"] * 5, golds, groups) == 0.0


def _multirc(target: str, group: str) -> Example:
    return Example(f"question: {group} answer: x paragraph: p", target, ("false", "true"), group=group)


def test_multirc_scores_f1_over_all_answers_and_em_per_question():
    examples = [_multirc("true", "q1"), _multirc("false", "q1"),
                _multirc("true", "q2"), _multirc("true", "q2"), _multirc("false", "q2")]
    task = get_task("multirc")
    assert task.score(examples, [e.target for e in examples]) == {"f1a": 100.0, "em": 100.0}
    assert task.score(examples, ["false", "true", "false", "false", "true"]) == {"f1a": 0.0, "em": 0.0}
    # q1 all right, q2 misses its second true answer: tp 2, fn 1 -> F1a 4/5; EM 1 of 2 questions
    scores = task.score(examples, ["true", "false", "true", "false", "false"])
    assert scores["f1a"] == pytest.approx(80.0)
    assert scores["em"] == 50.0


def test_squad_normalisation_and_token_f1():
    assert metrics.normalize_answer("The  Cat's, an owl!") == "cats owl"
    assert metrics.exact_match("the Bhutto.", "Bhutto") == 1.0
    assert metrics.token_f1("Benazir Bhutto", "Bhutto") == pytest.approx(2 / 3)
    assert metrics.token_f1("Chelsea", "Bhutto") == 0.0


def _record(golds: tuple[str, ...], group: str) -> Example:
    choices = ("Benazir Bhutto", "Bhutto", "Chelsea", "Pakistan")
    return Example(f"record query: {group}", golds[0], choices, group=group, answers=golds)


def test_record_takes_the_maximum_over_gold_answers():
    task = get_task("record")
    examples = [_record(("Benazir Bhutto", "Bhutto"), "q1"), _record(("Pakistan",), "q2")]
    assert task.score(examples, ["Bhutto", "Pakistan"]) == {"f1": 100.0, "em": 100.0}
    assert task.score(examples, ["Chelsea", "Bhutto"]) == {"f1": 0.0, "em": 0.0}
    # q1: 'Benazir' scores F1 max(2/3 vs 'Benazir Bhutto', 0 vs 'Bhutto'), EM 0; q2 right
    scores = task.score(examples, ["Benazir", "Pakistan"])
    assert scores["f1"] == pytest.approx(100 * (2 / 3 + 1) / 2)
    assert scores["em"] == 50.0


def test_record_scores_each_question_once_even_with_training_copies():
    task = get_task("record")
    question = _record(("Benazir Bhutto", "Bhutto"), "q1")
    copies = task.training_examples(question)
    assert [c.target for c in copies] == ["Benazir Bhutto", "Bhutto"]
    other = _record(("Pakistan",), "q2")
    assert task.score([*copies, other], ["Bhutto", "Bhutto", "Chelsea"]) == {"f1": 50.0, "em": 50.0}


def test_cb_reports_accuracy_and_macro_f1():
    task = get_task("cb")
    labels = task.labels
    examples = [Example("premise: p hypothesis: h", label, labels) for label in labels]
    assert task.score(examples, list(labels)) == {"accuracy": 100.0, "macro_f1": pytest.approx(100.0)}
    rotated = list(labels[1:]) + [labels[0]]
    assert task.score(examples, rotated) == {"accuracy": 0.0, "macro_f1": 0.0}


def test_mrpc_reports_f1_of_the_paraphrase_class():
    task = get_task("mrpc")
    examples = [Example("sentence1: a sentence2: b", t, task.labels) for t in ("yes", "yes", "no", "no")]
    assert task.score(examples, ["yes", "no", "no", "no"]) == {"accuracy": 75.0, "f1": pytest.approx(100 * 2 / 3)}
