"""The LoRA family through Hugging Face PEFT: LoRA, DoRA, rsLoRA, PiSSA, LoRA+ and LoRA-GA, each a set of
`peft.LoraConfig` options (lamp_engine/methods.py), never hand-written.

`peft.get_peft_model` puts the adapter's layers into the backbone's model in place, so the backbone runs as
for any method, with an empty prompt; only the adapter's parameters train, and the rest of the model stays
frozen and in evaluation mode (as under every other method here). PiSSA and LoRA-GA start from a residual of
the weights; their adapter is saved converted to a plain LoRA of the original weights, so it loads with
`PeftModel.from_pretrained` on the untouched model.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path

import peft
import torch
from peft.optimizers import create_loraplus_optimizer
from safetensors.torch import save_file
from torch import nn

from lamp_engine.aliases import BackboneFamily
from lamp_engine.backbones.base import Backbone, Encoded
from lamp_engine.methods import LoraConfig
from lamp_engine.modules import FixedPrompt, MethodModule

TASK_TYPES = {BackboneFamily.SEQ2SEQ: peft.TaskType.SEQ_2_SEQ_LM, BackboneFamily.CAUSAL: peft.TaskType.CAUSAL_LM,
              BackboneFamily.ENCODER: None}
HEAD_FILE = "head.safetensors"


class LoraAdapter(MethodModule):
    def __init__(self, config: LoraConfig, backbone: Backbone, batches: list[list[Encoded]] | None = None) -> None:
        super().__init__(config)
        self.hidden_size, self.device = backbone.hidden_size, backbone.device
        model = backbone.model
        if getattr(model, "is_loaded_in_4bit", False):  # QLoRA: norms and embeddings to fp32, checkpointing on
            model = peft.prepare_model_for_kbit_training(model)
        options = dict(config.peft_options)
        if options.get("init_lora_weights") == "lora_ga":
            options["lora_ga_config"] = peft.LoraGAConfig()
        settings = peft.LoraConfig(
            r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
            target_modules=list(config.targets(backbone.shape)), exclude_modules=left_alone(backbone),
            task_type=TASK_TYPES[backbone.family], **options)
        if "lora_ga_config" in options:
            peft.preprocess_loraga(model, settings, lambda: accumulate_gradients(backbone, batches or []))
        self._wrapped = [peft.get_peft_model(model, settings)]  # a list: kept out of this module's own tree
        self.initial = self.snapshot_initial_adapter() if "init_lora_weights" in options else None

    @property
    def peft_model(self) -> peft.PeftModel:
        return self._wrapped[0]

    def snapshot_initial_adapter(self) -> tempfile.TemporaryDirectory:
        """PiSSA's and LoRA-GA's starting A and B: saving converts the trained adapter against them."""
        folder = tempfile.TemporaryDirectory(prefix="lamp-initial-adapter-")
        self.peft_model.save_pretrained(folder.name)
        return folder

    def forward(self) -> torch.Tensor:
        return torch.zeros(0, self.hidden_size, device=self.device)

    def train(self, mode: bool = True) -> LoraAdapter:
        """Only the adapter's dropout follows the training mode; the frozen model stays in evaluation mode."""
        for name, module in self.peft_model.named_modules():
            if name.endswith("lora_dropout") or ".lora_dropout." in name:
                module.train(mode)
        return super().train(mode)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.peft_model.parameters() if p.requires_grad]

    def param_groups(self, lr: float) -> list[dict]:
        """LoRA+'s groups as PEFT builds them (B at loraplus_lr_ratio times A's rate); one group otherwise."""
        ratio = getattr(self.config, "loraplus_lr_ratio", None)
        if ratio is None:
            return super().param_groups(lr)
        built = create_loraplus_optimizer(self.peft_model, torch.optim.AdamW, lr=lr,
                                          loraplus_lr_ratio=ratio)
        return [{"params": group["params"], "lr": group["lr"]} for group in built.param_groups if group["params"]]

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in peft.get_peft_model_state_dict(self.peft_model).items()}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        peft.set_peft_model_state_dict(self.peft_model, state)

    def save(self, folder: Path, backbone: Backbone, config: dict) -> None:
        """peft/: the adapter (PeftModel.from_pretrained on the original model gives our outputs); head.safetensors:
        the encoder's classification head, which lives outside the model."""
        self.peft_model.peft_config["default"].base_model_name_or_path = config["model"]
        if self.initial is None:
            self.peft_model.save_pretrained(str(folder / "peft"))
        else:
            with tempfile.TemporaryDirectory() as scratch:  # the conversion rewrites the initial adapter's config
                initial = shutil.copytree(self.initial.name, Path(scratch) / "initial")
                self.peft_model.save_pretrained(str(folder / "peft"),
                                                path_initial_model_for_weight_conversion=str(initial))
        save_head(folder, backbone)


def save_head(folder: Path, backbone: Backbone) -> None:
    if backbone.head is not None:
        save_file({k: v.detach().float().cpu().contiguous() for k, v in backbone.head.state_dict().items()},
                  str(folder / HEAD_FILE))


def left_alone(backbone: Backbone) -> list[str]:
    """The linear layers no adapter touches: BERT's pooler, which our mean-pooling encoder never reads (its
    adapter would get no gradient), and the LM head, as PEFT's own all-linear leaves it."""
    return sorted(name for name, module in backbone.model.named_modules()
                  if isinstance(module, nn.Linear) and not backbone.adaptable(name))


def accumulate_gradients(backbone: Backbone, batches: list[list[Encoded]]) -> None:
    """LoRA-GA's gradient estimate: the task loss's gradients over the first training batches."""
    empty = FixedPrompt.empty(backbone.hidden_size).to(backbone.device)
    with warnings.catch_warnings():  # PEFT's counting hooks fire on outputs only, as it intends
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        for batch in batches:
            backbone.loss(empty, batch).backward()
