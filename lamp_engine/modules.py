"""The trainable part of a run, whatever its method, and how it is built.

Every method is an `nn.Module` the training loop treats alike: `forward()` returns the prompt rows the backbone
prepends to the text (none for weight adapters and full fine-tuning), `param_groups()` feeds the optimiser,
`trainable_state()` is what a checkpoint and the best-so-far keep, and `save()` writes the method's files into the
run folder. Soft prompts live in lamp_engine/prompts/, weight adapters and full fine-tuning in
lamp_engine/adapters/; the method registry (lamp_engine/methods.py) names each one's class.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

import torch
from torch import nn

from lamp_engine.backbones.base import Backbone, Encoded
from lamp_engine.methods import MethodConfig, MethodFamily

log = logging.getLogger(__name__)


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
        """Loads a saved state; entries the method no longer has (a retired option's buffer) are left out with a
        warning, so a stored run resumes as today's method."""
        retired = self.load_state_dict(state, strict=False).unexpected_keys
        if retired:
            log.warning("the saved state has %s, which %s no longer has; left out", ", ".join(retired),
                        self.config.name)

    def save(self, folder: Path, backbone: Backbone, config: dict) -> None:
        """Write the method's files (its parameters, an adapter others can load) into the run folder."""
        raise NotImplementedError


class FixedPrompt(nn.Module):
    """Prompt rows that do not train: the rows a trained soft prompt fed the model, read back to predict, or none
    (`FixedPrompt.empty`) for a model whose weights carry what was trained (an adapter, full fine-tuning)."""

    def __init__(self, rows: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("rows", rows.detach().float())  # follows .to(device)

    @classmethod
    def empty(cls, hidden_size: int) -> FixedPrompt:
        return cls(torch.zeros(0, hidden_size))

    def forward(self) -> torch.Tensor:
        return self.rows

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
        init, rule = kind.initial_prompt(config, backbone, generator)
        return kind(config, init, max_source_length).to(backbone.device), rule
    return kind(config, backbone, batches), None
