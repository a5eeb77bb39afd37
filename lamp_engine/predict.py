"""Running a trained prompt on new text (the dashboard's "try it" box, run by a worker).

The typed text fills the task's template where the task has one text field (SST-2's `sentence: {text}`);
otherwise it is used as the model's source as typed (e.g. `premise: .. hypothesis: ..`). The candidate answers
are the label words the run was trained with.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from lamp_common.result import RunResult
from lamp_engine.config import RunConfig
from lamp_engine.errors import ModelError
from lamp_engine.methods import MethodFamily
from lamp_engine.tasks import Example, Task

if TYPE_CHECKING:
    from lamp_engine.backbones import Backbone


def text_template(task: Task, config: RunConfig) -> str | None:
    """`..{text}..` when the task's source has exactly one text field, else None."""
    if task.name == "custom":
        return None if config.data.text_pair_column else f"{config.data.text_column}: {{text}}"
    template = getattr(task, "template", None)
    if not template:
        return None
    names = [name for _, name, _, _ in string.Formatter().parse(template) if name]
    return template.replace("{" + names[0] + "}", "{text}") if len(names) == 1 else None


def fixed_labels(examples: list[Example]) -> list[str] | None:
    """The label words when every example has the same candidates (what `predict` can choose among)."""
    choices = {e.choices for e in examples}
    return list(choices.pop()) if len(choices) == 1 else None


def predict(run_dir: str | Path, texts: list[str]) -> list[dict]:
    """Scores of each label word for each text, with the run's best state: its prompt, its adapter or its weights,
    and the encoder's head."""
    folder = Path(run_dir)
    result = RunResult.from_json((folder / "result.json").read_text())
    labels, template = result.labels, result.source_template
    if not labels:
        raise ModelError(f"task {result.task}: its answers vary per example, so free text cannot be scored")
    config = RunConfig.from_stored(result.config)
    examples = [Example(template.format(text=t) if template else t, labels[0], tuple(labels)) for t in texts]
    backbone, method = load_trained(folder, config, examples)
    with torch.inference_mode():
        scores = backbone.choice_scores(method, [backbone.encode(e) for e in examples])
    return [{"text": text, "source": example.source, "prediction": labels[max(range(len(s)), key=s.__getitem__)],
             "scores": dict(zip(labels, s, strict=True))}
            for text, example, s in zip(texts, examples, scores, strict=True)]


def load_trained(folder: Path, config: RunConfig, examples: list[Example]) -> tuple[Backbone, nn.Module]:
    """The run's model with what it trained, read from its run folder: a soft prompt's parameters, an adapter
    applied with PEFT, or the fully fine-tuned weights; and the encoder's head for these examples' labels."""
    from safetensors.torch import load_file

    from lamp_engine.adapters.full import MODEL_FOLDER
    from lamp_engine.adapters.lora import HEAD_FILE
    from lamp_engine.backbones import load_backbone
    from lamp_engine.export import load_prompt
    from lamp_engine.modules import FixedPrompt
    from lamp_engine.prompts import build_prompt

    family = config.method.family
    model = str(folder / MODEL_FOLDER) if family is MethodFamily.FULL_FINE_TUNING else config.model
    backbone = load_backbone(model, config.train)
    backbone.prepare(examples)
    if family is MethodFamily.SOFT_PROMPT:
        saved = load_prompt(folder)
        if config.method.exports_peft:  # the rows the model read are the whole prompt, however they were built
            method = FixedPrompt(saved["prompt"])
        else:  # DePT also changes the text's embeddings: its own module
            method = build_prompt(config.method, torch.zeros(config.method.length, backbone.hidden_size),
                                  config.train.max_source_length)
            method.load_trainable_state(saved["params"])
        head = saved["head"]
    else:
        if family is MethodFamily.WEIGHT_ADAPTER:
            from peft import PeftModel

            PeftModel.from_pretrained(backbone.model, str(folder / "peft"))  # puts the adapter in place
        method = FixedPrompt.empty(backbone.hidden_size)
        head = load_file(str(folder / HEAD_FILE)) if (folder / HEAD_FILE).is_file() else {}
    if backbone.head is not None:
        backbone.head.load_state_dict(head)
    return backbone, method.to(backbone.device)
