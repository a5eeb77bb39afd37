"""What the three backbone families share: a frozen model, tokenised examples, and prompt injection.

One injection rule for all: the prompt rows are prepended to the input embeddings (the encoder's, for seq2seq
models) and the attention mask is extended with ones. Sequences are right-padded, so no pad token ever sits
between the prompt and the text.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from lamp_engine.aliases import BackboneFamily, Linear, ModelShape
from lamp_engine.config import TrainConfig
from lamp_engine.tasks import Example


class Prompt(Protocol):
    """What a backbone needs of a method (lamp_engine/modules.py): the rows to prepend, and any change to the text's
    own embeddings. Backbones know no more of the methods than this, so the methods may depend on backbones."""

    def __call__(self) -> torch.Tensor: ...

    def adjust_input_embeds(self, embeds: torch.Tensor) -> torch.Tensor: ...


@dataclass
class Encoded:
    """An example as token ids: the source, the gold target and every candidate target."""

    source: list[int]
    target: list[int]
    choices: list[list[int]]
    label: int
    truncated: bool


def pad(rows: list[list[int]], value: int) -> torch.Tensor:
    """Right-pads id lists into one (rows x longest) tensor."""
    width = max(len(row) for row in rows)
    return torch.tensor([row + [value] * (width - len(row)) for row in rows])


def pad_mask(rows: list[list[int]]) -> torch.Tensor:
    return pad([[1] * len(row) for row in rows], 0)


def per_example(scores: list[float], batch: list[Encoded]) -> list[list[float]]:
    """Splits a flat list of (example, choice) scores back into one list per example."""
    out, start = [], 0
    for example in batch:
        out.append(scores[start:start + len(example.choices)])
        start += len(example.choices)
    return out


class Backbone:
    """A frozen pretrained model of one family, able to train and score a soft prompt."""

    family: BackboneFamily

    def __init__(self, model: nn.Module, tokenizer, device: torch.device, train: TrainConfig) -> None:
        self.model = model.requires_grad_(False)
        self.tokenizer = tokenizer
        self.device = device
        self.max_source_length = train.max_source_length
        self.max_target_length = train.max_target_length
        self.head: nn.Module | None = None

    @property
    def hidden_size(self) -> int:
        return self.model.get_input_embeddings().embedding_dim

    def total_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def adaptable(self, name: str) -> bool:
        """Whether an adapter may touch this linear layer: not BERT's pooler, which our mean-pooling encoder never
        reads, nor the LM head (PEFT's all-linear leaves it too)."""
        return name.split(".")[0] != "pooler" and self.model.get_submodule(name) is not \
            self.model.get_output_embeddings()

    @property
    def shape(self) -> ModelShape:
        """The loaded model's shape: what the methods' formulas and checks read (lamp_engine/aliases.py)."""
        found = Counter((name.rsplit(".", 1)[-1], module.in_features, module.out_features, self.adaptable(name))
                        for name, module in self.model.named_modules() if isinstance(module, nn.Linear))
        linears = tuple(Linear(n, i, o, count, a) for (n, i, o, a), count in found.items())
        return ModelShape(self.hidden_size, self.model.config.model_type, linears, self.total_params())

    def prepare(self, examples: list[Example]) -> None:
        """Anything that depends on the task (the encoder family's classification head)."""

    def ids(self, text: str, limit: int, special: bool = True) -> tuple[list[int], bool]:
        ids = self.tokenizer(text, add_special_tokens=special)["input_ids"]
        return ids[:limit], len(ids) > limit

    def encode(self, example: Example) -> Encoded:
        source, cut = self.ids(example.source, self.max_source_length)
        target = self.ids(example.target, self.max_target_length)[0]
        choices = [self.ids(choice, self.max_target_length)[0] for choice in example.choices]
        return Encoded(source, target, choices, example.choices.index(example.target), cut)

    def with_prompt(self, prompt: Prompt, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Input embeddings with the prompt prepended, and the attention mask extended over it."""
        text = prompt.adjust_input_embeds(self.model.get_input_embeddings()(ids.to(self.device)))
        rows = prompt().to(text.dtype)
        embeds = torch.cat([rows.expand(ids.shape[0], -1, -1), text], dim=1)
        ones = torch.ones(ids.shape[0], rows.shape[0], dtype=mask.dtype)
        return embeds, torch.cat([ones, mask], dim=1).to(self.device)

    def loss(self, prompt: Prompt, batch: list[Encoded]) -> torch.Tensor:
        raise NotImplementedError

    def choice_scores(self, prompt: Prompt, batch: list[Encoded]) -> list[list[float]]:
        """One score per candidate target of each example; the highest is the prediction."""
        raise NotImplementedError

    def logits(self, prompt: Prompt, ids: torch.Tensor, mask: torch.Tensor, **kwargs) -> torch.Tensor:
        """The model's full output logits with the prompt injected (used to check exported adapters)."""
        embeds, mask = self.with_prompt(prompt, ids, mask)
        return self.model(inputs_embeds=embeds, attention_mask=mask, use_cache=False, **kwargs).logits
