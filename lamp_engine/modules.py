"""The trainable part of a run, whatever its method, and how it is built.

Every method is an `nn.Module` the training loop treats alike: `forward()` returns the prompt rows the backbone
prepends to the text (none for weight adapters and full fine-tuning), `param_groups()` feeds the optimiser,
`trainable_state()` is what a checkpoint and the best-so-far keep, and `save()` writes the method's files into the
run folder. Soft prompts live in lamp_engine/prompts/, weight adapters and full fine-tuning in
lamp_engine/adapters/; the method registry (lamp_engine/methods.py) names each one's class.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from lamp_engine.methods import MethodConfig, MethodFamily

if TYPE_CHECKING:
    from lamp_engine.backbones.base import Backbone, Encoded


class MethodModule(nn.Module):
    """A method's trainable part. Its parameters are fp32 whatever the backbone's dtype where the method owns them
    (the backbone casts the prompt when it prepends it)."""

    def __init__(self, config: MethodConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self) -> torch.Tensor:
        """The (tokens x d) prompt rows prepended to the input embeddings."""
        raise NotImplementedError

    def unpooled(self) -> torch.Tensor | None:
        """The tokens before pooling, for methods that pool (LAMP's C); None for the others."""
        return None

    def adjust_input_embeds(self, embeds: torch.Tensor) -> torch.Tensor:
        """Hook for methods that also change the text's own embeddings (DePT); identity otherwise."""
        return embeds

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def param_groups(self, lr: float) -> list[dict]:
        """The optimiser's parameter groups at the run's learning rate `lr` (a method may give a group its own)."""
        return [{"params": self.trainable_parameters(), "lr": lr}]

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters())

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """A copy of what training changes (for the best-so-far state and checkpoints)."""
        return {name: value.detach().clone() for name, value in self.state_dict().items()}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        self.load_state_dict(state)

    def save(self, folder: Path, backbone: Backbone, config: dict) -> None:
        """Write the method's files (its parameters, an adapter others can load) into the run folder."""
        raise NotImplementedError


class EmptyPrompt(nn.Module):
    """No prompt rows: the backbone's input for a model whose weights carry what was trained (an adapter, full
    fine-tuning), e.g. when LoRA-GA estimates gradients or a trained adapter predicts."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.anchor = nn.Parameter(torch.zeros(0), requires_grad=False)  # follows .to(device)

    def forward(self) -> torch.Tensor:
        return self.anchor.new_zeros(0, self.hidden_size)

    def adjust_input_embeds(self, embeds: torch.Tensor) -> torch.Tensor:
        return embeds


def method_class(config: MethodConfig) -> type[MethodModule]:
    module, _, name = config.module.partition(":")
    return getattr(importlib.import_module(module), name)


def build_method(config: MethodConfig, backbone: Backbone, generator: torch.Generator, max_source_length: int,
                 batches: list[list[Encoded]]) -> tuple[MethodModule, str | None]:
    """The method's module on the backbone's device, and for soft prompts the rule that chose the vocabulary rows
    of their initial prompt. `batches` are the first training batches (LoRA-GA estimates gradients on them)."""
    kind = method_class(config)
    if config.family is MethodFamily.SOFT_PROMPT:
        init, rule = backbone.vocabulary_rows(config.length, generator, config.init_vocabulary)
        return kind(config, init, max_source_length).to(backbone.device), rule
    return kind(config, backbone, batches), None
