"""Full fine-tuning: every weight of the model trains (the reference point of the paper's Table 1).

The model stays in evaluation mode (no dropout), as the frozen model does under every other method here, so
the methods differ only in what trains (`--backbone-dropout on` trains every method with the model's dropout).
The run folder gets the whole model as safetensors (model/, loadable with `from_pretrained`), with its
tokenizer, and the encoder's head apart.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lamp_engine.adapters.lora import save_head
from lamp_engine.backbones.base import Backbone, Encoded
from lamp_engine.methods import FullFineTuningConfig
from lamp_engine.modules import MethodModule

MODEL_FOLDER = "model"


class FullFineTuning(MethodModule):
    def __init__(self, config: FullFineTuningConfig, backbone: Backbone,
                 batches: list[list[Encoded]] | None = None) -> None:
        super().__init__(config)
        self.hidden_size, self.device = backbone.hidden_size, backbone.device
        self._model = [backbone.model.requires_grad_(True)]  # a list: kept out of this module's own tree

    @property
    def model(self) -> nn.Module:
        return self._model[0]

    def forward(self) -> torch.Tensor:
        return torch.zeros(0, self.hidden_size, device=self.device)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.model.parameters())

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)

    def save(self, folder: Path, backbone: Backbone, config: dict) -> None:
        self.model.save_pretrained(str(folder / MODEL_FOLDER), safe_serialization=True)
        backbone.tokenizer.save_pretrained(str(folder / MODEL_FOLDER))
        save_head(folder, backbone)
