"""The eight SuperGLUE tasks as text-to-text, in the DPT/DePT source formats, with word verbalizers.

Local rows come in the original SuperGLUE JSONL layout (nested for MultiRC, ReCoRD and WSC); hub rows
(`aps/super_glue`) come flat. Each renderer accepts both, so one template serves both sources.
"""

from __future__ import annotations

import re

from lamp_engine.errors import TaskError
from lamp_engine.tasks import metrics
from lamp_engine.tasks.base import Example
from lamp_engine.tasks.benchmark import (
    BenchmarkTask,
    FieldView,
    HubLayout,
    LabelTask,
    first_per_group,
    label_index,
    superglue_layout,
    with_target,
)
from lamp_engine.tasks.sources import Row

NO_YES = ("no", "yes")
FALSE_TRUE = ("false", "true")


class CB(LabelTask):
    name = "cb"
    description = "CommitmentBank: does the premise commit to the hypothesis? (3-way NLI)"
    metrics = ("accuracy", "macro_f1")
    main_metric = "accuracy"
    local = superglue_layout("CB")
    hub = HubLayout("aps/super_glue", "cb")
    template = "premise: {premise} hypothesis: {hypothesis}"
    label_names = ("entailment", "contradiction", "neutral")
    words = ("entailment", "contradiction", "neutral")


class RTE(LabelTask):
    name = "rte"
    description = "Recognising Textual Entailment (2-way NLI)"
    metrics = ("accuracy",)
    main_metric = "accuracy"
    local = superglue_layout("RTE")
    hub = HubLayout("aps/super_glue", "rte")
    template = "premise: {premise} hypothesis: {hypothesis}"
    label_names = ("entailment", "not_entailment")
    words = ("yes", "no")


class BoolQ(LabelTask):
    name = "boolq"
    description = "yes/no questions about a Wikipedia passage"
    metrics = ("accuracy",)
    main_metric = "accuracy"
    local = superglue_layout("BoolQ")
    hub = HubLayout("aps/super_glue", "boolq")
    template = "question: {question} passage: {passage}"
    label_names = FALSE_TRUE
    words = NO_YES


class WiC(LabelTask):
    name = "wic"
    description = "Word-in-Context: is the word used in the same sense in both sentences?"
    metrics = ("accuracy",)
    main_metric = "accuracy"
    local = superglue_layout("WiC")
    hub = HubLayout("aps/super_glue", "wic")
    template = "sentence1: {sentence1} sentence2: {sentence2} word: {word}"
    label_names = FALSE_TRUE
    words = NO_YES


class WSC(LabelTask):
    """Coreference: does the pronoun (span 2, marked *like this* in the text) refer to span 1?"""

    name = "wsc"
    description = "Winograd Schema: does the marked pronoun refer to the given noun phrase?"
    metrics = ("accuracy",)
    main_metric = "accuracy"
    local = superglue_layout("WSC")
    hub = HubLayout("aps/super_glue", "wsc.fixed")
    label_names = FALSE_TRUE
    words = NO_YES

    def render(self, row: Row) -> list[Example]:
        nested = row.fields.get("target")
        spans = Row(nested, row.origin) if isinstance(nested, dict) else row
        text, span1, span2 = row.get("text"), spans.get("span1_text"), spans.get("span2_text")
        marked = mark_span(text, span2, spans.fields.get("span2_index"))
        source = f"text: {marked} span1_text: {span1} span2_text: {span2}"
        return [Example(source, self.words[label_index(row, self.label_names)], self.words, origin=row.origin)]


def mark_span(text: str, span: str, word_index: int | None) -> str:
    """The text with `span` starting at word `word_index` wrapped in asterisks (T5's WSC marking).

    Left unmarked when the index does not point at the span (a few SuperGLUE rows are off by one).
    """
    words = text.split(" ")
    if word_index is None or not 0 <= word_index < len(words):
        return text
    count = len(span.split())
    covered = " ".join(words[word_index:word_index + count])
    if not covered.lower().startswith(span.lower()):
        return text
    rest = covered[len(span):]
    return " ".join([*words[:word_index], f"*{covered[:len(span)]}*{rest}", *words[word_index + count:]])


class COPA(BenchmarkTask):
    """Choice of plausible alternatives: the target is the text of the right choice, the choices are both."""

    name = "copa"
    description = "Choice of Plausible Alternatives: which choice is the cause (or effect) of the premise?"
    metrics = ("accuracy",)
    main_metric = "accuracy"
    local = superglue_layout("COPA")
    hub = HubLayout("aps/super_glue", "copa")
    labels = None

    def render(self, row: Row) -> list[Example]:
        fields = FieldView(row)
        choices = (fields["choice1"], fields["choice2"])
        source = (f"premise: {fields['premise']} question: what was the {fields['question']}? "
                  f"choice1: {choices[0]} choice2: {choices[1]}")
        target = choices[label_index(row, ("choice1", "choice2"))]
        return [Example(source, target, choices, origin=row.origin)]

    def score(self, examples: list[Example], predictions: list[str]) -> dict[str, float]:
        return {"accuracy": metrics.accuracy(predictions, [e.target for e in examples])}


class MultiRC(BenchmarkTask):
    """Multi-sentence reading comprehension: each answer option is judged true or false; `group` = question."""

    name = "multirc"
    description = "Multi-Sentence Reading Comprehension: is each answer option to the question correct?"
    metrics = ("f1a", "em")
    main_metric = "f1a"
    local = superglue_layout("MultiRC")
    hub = HubLayout("aps/super_glue", "multirc")
    labels = FALSE_TRUE

    def render(self, row: Row) -> list[Example]:
        passage = row.fields.get("passage")
        if isinstance(passage, dict):  # local: one row per passage, questions and answers nested
            return self._render_passage(row, Row(passage, row.origin))
        idx = row.fields.get("idx") or {}
        group = f"{idx.get('paragraph')}-{idx.get('question')}"
        return [self._example(row.get("paragraph"), row.get("question"), row.get("answer"), row, group)]

    def _render_passage(self, row: Row, passage: Row) -> list[Example]:
        out = []
        for q_number, question in enumerate(passage.get("questions"), start=1):
            where = Row(question, f"{row.origin} (question {q_number})")
            group = f"{row.fields.get('idx')}-{question.get('idx', q_number)}"
            for a_number, answer in enumerate(where.get("answers"), start=1):
                answer_row = Row(answer, f"{row.origin} (question {q_number}, answer {a_number})")
                out.append(self._example(passage.get("text"), where.get("question"), answer_row.get("text"),
                                         answer_row, group))
        return out

    def _example(self, paragraph: str, question: str, answer: str, labelled: Row, group: str) -> Example:
        source = f"question: {question.strip()} answer: {answer.strip()} paragraph: {paragraph.strip()}"
        target = self.labels[label_index(labelled, self.labels)]
        return Example(source, target, self.labels, group=group, origin=labelled.origin)

    def score(self, examples: list[Example], predictions: list[str]) -> dict[str, float]:
        golds = [e.target for e in examples]
        return {"f1a": metrics.binary_f1(predictions, golds, positive="true"),
                "em": metrics.grouped_exact_match(predictions, golds, [e.group for e in examples])}


class ReCoRD(BenchmarkTask):
    """Cloze-style reading comprehension: pick the passage entity that fills @placeholder.

    Choices are the passage's entity strings; evaluation keeps one example per query with every gold answer,
    training uses one example per distinct gold answer.
    """

    name = "record"
    description = "Reading Comprehension with Commonsense Reasoning: which entity fills the @placeholder?"
    metrics = ("f1", "em")
    main_metric = "f1"
    local = superglue_layout("ReCoRD")
    hub = HubLayout("aps/super_glue", "record")
    labels = None

    def render(self, row: Row) -> list[Example]:
        passage = row.fields.get("passage")
        if isinstance(passage, dict):  # local: entities as character spans, queries nested
            return self._render_passage(row, Row(passage, row.origin))
        idx = row.fields.get("idx") or {}
        group = f"{idx.get('passage')}-{idx.get('query')}"
        return [self._example(row.get("passage"), list(row.get("entities")), row.get("query"),
                              list(row.get("answers")), row, group)]

    def _render_passage(self, row: Row, passage: Row) -> list[Example]:
        text = passage.get("text")
        entities = [text[span["start"]:span["end"] + 1] for span in passage.get("entities")]
        out = []
        for number, qa in enumerate(row.get("qas"), start=1):
            where = Row(qa, f"{row.origin} (query {number})")
            answers = [answer["text"] for answer in where.get("answers")]
            group = f"{row.fields.get('idx')}-{qa.get('idx', number)}"
            out.append(self._example(text, entities, where.get("query"), answers, where, group))
        return out

    def _example(self, passage: str, entities: list[str], query: str, answers: list[str], where: Row,
                 group: str) -> Example:
        golds = tuple(dict.fromkeys(a.strip() for a in answers if a.strip()))
        if not golds:
            raise TaskError(f"{where.origin}: the query has no gold answer")
        choices = tuple(dict.fromkeys([*(e.strip() for e in entities if e.strip()), *golds]))
        source = f"record query: {query.strip()} entities: {', '.join(choices)} passage: {clean_passage(passage)}"
        return Example(source, golds[0], choices, group=group, answers=golds, origin=where.origin)

    def training_examples(self, example: Example) -> list[Example]:
        return [with_target(example, answer) for answer in example.gold]

    def score(self, examples: list[Example], predictions: list[str]) -> dict[str, float]:
        examples, predictions = first_per_group(examples, predictions)
        return metrics.squad_scores(predictions, [e.gold for e in examples])


def clean_passage(text: str) -> str:
    """ReCoRD's '@highlight' bullet markers joined into sentences, as T5's preprocessing does."""
    text = re.sub(r"([.?!\"'])\n@highlight\n", r"\1 ", text)
    return re.sub(r"\n@highlight\n", ". ", text).strip()


SUPERGLUE_TASKS: tuple[type[BenchmarkTask], ...] = (CB, WSC, COPA, RTE, WiC, BoolQ, MultiRC, ReCoRD)
