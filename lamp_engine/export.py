"""Run-folder files: the method's own parameters with the materialised prompt, and a PEFT adapter folder.

prompt.safetensors holds `params.<name>` (the method's parameters, enough to resume training), `head.<name>`
(the encoder family's classifier) and `prompt` (the tokens x d matrix the model sees). The `peft/` folder is an
ordinary PEFT prompt-tuning adapter: `PeftModel.from_pretrained(base_model, "peft")` gives the same outputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lamp_engine.aliases import BackboneFamily

PROMPT_FILE = "prompt.safetensors"
PEFT_TASK_TYPES = {BackboneFamily.SEQ2SEQ: "SEQ_2_SEQ_LM", BackboneFamily.CAUSAL: "CAUSAL_LM"}


def save_prompt(folder: Path, prompt: nn.Module, head: nn.Module | None, config: dict) -> None:
    """`prompt` is any module whose call gives the rows the model reads; its state is what resumes training."""
    tensors = {f"params.{k}": v.detach().float().cpu().contiguous() for k, v in prompt.state_dict().items()}
    if head is not None:
        tensors |= {f"head.{k}": v.detach().float().cpu().contiguous() for k, v in head.state_dict().items()}
    with torch.no_grad():
        tensors["prompt"] = prompt().detach().float().cpu().clone(memory_format=torch.contiguous_format)
    save_file(tensors, str(folder / PROMPT_FILE), metadata={"config": json.dumps(config)})


def load_prompt(folder: Path) -> dict[str, dict[str, torch.Tensor] | torch.Tensor]:
    """{'params': method state dict, 'head': head state dict (may be empty), 'prompt': materialised prompt}."""
    tensors = load_file(str(Path(folder) / PROMPT_FILE))
    return {
        "params": {k.removeprefix("params."): v for k, v in tensors.items() if k.startswith("params.")},
        "head": {k.removeprefix("head."): v for k, v in tensors.items() if k.startswith("head.")},
        "prompt": tensors["prompt"],
    }


def save_peft_adapter(folder: Path, prompt: torch.Tensor, family: BackboneFamily, model_config,
                      base_model: str) -> None:
    """Writes `folder` as a PEFT prompt-tuning adapter holding the materialised prompt."""
    from peft import PromptTuningConfig

    folder.mkdir(parents=True, exist_ok=True)
    config = PromptTuningConfig(
        task_type=PEFT_TASK_TYPES[family],
        num_virtual_tokens=prompt.shape[0],
        token_dim=prompt.shape[1],
        num_transformer_submodules=1,  # encoder side only, for seq2seq models too
        num_attention_heads=first_attribute(model_config, "num_attention_heads", "num_heads"),
        num_layers=first_attribute(model_config, "num_hidden_layers", "num_layers"),
        base_model_name_or_path=base_model,
    )
    config.save_pretrained(str(folder))
    save_file({"prompt_embeddings": prompt.detach().float().cpu().contiguous()},
              str(folder / "adapter_model.safetensors"))


def first_attribute(config, *names: str) -> int | None:
    return next((getattr(config, n) for n in names if getattr(config, n, None)), None)
