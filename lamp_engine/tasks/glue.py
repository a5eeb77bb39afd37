"""The four GLUE tasks of the paper as text-to-text: SST-2, MNLI, QNLI and MRPC.

SST-2 reads the sentence-level text files found in ../shared/data; MNLI, QNLI and MRPC read GLUE's own TSV
files when a user has them locally (`glue/MNLI/train.tsv` ...), else the hub (`nyu-mll/glue`).
"""

from __future__ import annotations

from lamp_engine.tasks.benchmark import BenchmarkTask, HubLayout, LabelTask, LocalLayout
from lamp_engine.tasks.sources import read_glue_tsv, read_labelled_lines


class SST2(LabelTask):
    name = "sst2"
    description = "Stanford Sentiment Treebank: is the movie-review sentence positive or negative?"
    metrics = ("accuracy",)
    main_metric = "accuracy"
    local = LocalLayout("glue/SST-2", {"train": "train.txt", "test": "dev.txt"}, reader=read_labelled_lines)
    hub = HubLayout("nyu-mll/glue", "sst2")
    template = "sentence: {sentence}"
    label_names = ("negative", "positive")
    words = ("negative", "positive")


class MNLI(LabelTask):
    name = "mnli"
    description = "Multi-Genre NLI (3-way); reported on the matched validation set"
    metrics = ("accuracy",)
    main_metric = "accuracy"
    local = LocalLayout("glue/MNLI", {"train": "train.tsv", "test": "dev_matched.tsv"}, reader=read_glue_tsv,
                        rename={"sentence1": "premise", "sentence2": "hypothesis", "gold_label": "label"})
    hub = HubLayout("nyu-mll/glue", "mnli", test="validation_matched")
    template = "premise: {premise} hypothesis: {hypothesis}"
    label_names = ("entailment", "neutral", "contradiction")
    words = ("entailment", "neutral", "contradiction")


class QNLI(LabelTask):
    name = "qnli"
    description = "Question NLI: does the sentence answer the question?"
    metrics = ("accuracy",)
    main_metric = "accuracy"
    local = LocalLayout("glue/QNLI", {"train": "train.tsv", "test": "dev.tsv"}, reader=read_glue_tsv)
    hub = HubLayout("nyu-mll/glue", "qnli")
    template = "question: {question} sentence: {sentence}"
    label_names = ("entailment", "not_entailment")
    words = ("yes", "no")


class MRPC(LabelTask):
    name = "mrpc"
    description = "Microsoft Research Paraphrase Corpus: are the two sentences paraphrases?"
    metrics = ("accuracy", "f1")
    main_metric = "accuracy"
    local = LocalLayout("glue/MRPC", {"train": "train.tsv", "test": "dev.tsv"}, reader=read_glue_tsv,
                        rename={"#1 String": "sentence1", "#2 String": "sentence2", "Quality": "label"})
    hub = HubLayout("nyu-mll/glue", "mrpc")
    template = "sentence1: {sentence1} sentence2: {sentence2}"
    label_names = ("not_equivalent", "equivalent")
    words = ("no", "yes")
    positive = "yes"


GLUE_TASKS: tuple[type[BenchmarkTask], ...] = (MNLI, QNLI, SST2, MRPC)
