"""Running a trained prompt on new text (the dashboard's "try it" box, run by a worker).

The typed text fills the task's template where the task has one text field (SST-2's `sentence: {text}`);
otherwise it is used as the model's source as typed (e.g. `premise: .. hypothesis: ..`). The candidate answers
are the label words the run was trained with.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch

from lamp_engine.config import RunConfig
from lamp_engine.errors import ModelError
from lamp_engine.tasks import Example, Task


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
    """Scores of each label word for each text, with the run's best prompt (and head)."""
    from lamp_engine.backbones import load_backbone
    from lamp_engine.export import load_prompt
    from lamp_engine.prompts import build_prompt

    folder = Path(run_dir)
    result = json.loads((folder / "result.json").read_text())
    labels, template = result.get("labels"), result.get("source_template")
    if not labels:
        raise ModelError(f"task {result['task']}: its answers vary per example, so free text cannot be scored")
    config = RunConfig.from_dict(result["config"])
    backbone = load_backbone(config.model, config.train)
    examples = [Example(template.format(text=t) if template else t, labels[0], tuple(labels)) for t in texts]
    backbone.prepare(examples)
    saved = load_prompt(folder)
    prompt = build_prompt(config.prompt, torch.zeros(config.prompt.length, backbone.hidden_size),
                          config.train.max_source_length)
    prompt.load_state_dict(saved["params"])
    prompt.to(backbone.device)
    if backbone.head is not None:
        backbone.head.load_state_dict(saved["head"])
    with torch.inference_mode():
        scores = backbone.choice_scores(prompt, [backbone.encode(e) for e in examples])
    return [{"text": text, "source": example.source, "prediction": labels[max(range(len(s)), key=s.__getitem__)],
             "scores": dict(zip(labels, s, strict=True))}
            for text, example, s in zip(texts, examples, scores, strict=True)]
