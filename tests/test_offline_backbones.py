"""The two larger offline backbones, gemma3-270m (a base causal LM de-quantised from GGUF) and mpnet-base (an MPNet
encoder at width 768): for every method, the parameter count the alias table gives before loading is the count of
the module built on the loaded model; LAMP and LoRA (one per family of methods) take two training steps with finite
losses that move their parameters. Every method training on them took 12 minutes of the suite's 25 on 2 cores; the
mechanics of each method are tested on the smaller models."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import torch

from lamp_engine.aliases import ALIASES
from lamp_engine.backbones import load_backbone
from lamp_engine.config import TrainConfig
from lamp_engine.methods import METHODS, MethodFamily, method_config
from lamp_engine.modules import build_method
from lamp_engine.tasks import Example
from lamp_engine.train import train_step

SOURCE_LENGTH = 32
EXAMPLES = [Example("sentence: a warm , funny film", "positive", ("negative", "positive")),
            Example("sentence: dull and long", "negative", ("negative", "positive"))]


def build(name: str, loaded: Any, batch: list) -> tuple[Any, Any]:
    """The method's module on a copy of the model where the method changes the model it wraps (PEFT's)."""
    config = method_config(name)
    backbone = loaded if config.family is MethodFamily.SOFT_PROMPT else copy.deepcopy(loaded)
    module, _ = build_method(config, backbone, torch.Generator().manual_seed(0), SOURCE_LENGTH, [batch])
    return backbone, module


@pytest.mark.slow
@pytest.mark.parametrize("model", ["gemma3-270m", "mpnet-base"])
def test_every_method_is_counted_before_loading_and_lamp_and_lora_train(model):
    loaded = load_backbone(model, TrainConfig(device="cpu", max_source_length=SOURCE_LENGTH))
    loaded.prepare(EXAMPLES)
    batch = [loaded.encode(e) for e in EXAMPLES]
    for name in METHODS:
        _, module = build(name, loaded, batch)
        assert method_config(name).trainable_params(ALIASES[model].shape, SOURCE_LENGTH) == module.num_trainable(), name
    for name in ("lamp", "lora"):
        backbone, module = build(name, loaded, batch)
        head = [{"params": list(backbone.head.parameters())}] if backbone.head else []
        lr = method_config(name).default_lr(backbone.family)
        optimizer = torch.optim.AdamW([*module.param_groups(lr), *head], lr=lr, weight_decay=0.0)
        before = [p.detach().clone() for group in optimizer.param_groups for p in group["params"]]
        losses = [train_step(backbone, module, batch, optimizer, max_grad_norm=1.0) for _ in range(2)]
        after = [p for group in optimizer.param_groups for p in group["params"]]
        assert all(math.isfinite(loss) for loss in losses), (name, losses)
        assert any(not torch.equal(b, a) for b, a in zip(before, after, strict=True)), name
