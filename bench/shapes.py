"""Randomly initialised model shapes for the speed bench: the paper-scale GPU shapes and tiny ones for tests.

No download is needed: the model is built from its config with random weights, which is all a speed and memory
measurement needs. The tiny shapes exist so the code path of the GPU setting runs (and cannot rot) on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lamp_engine.aliases import BackboneFamily


@dataclass(frozen=True)
class Shape:
    family: BackboneFamily  # causal or seq2seq
    config: dict


CAUSAL, SEQ2SEQ = BackboneFamily.CAUSAL, BackboneFamily.SEQ2SEQ
SHAPES: dict[str, Shape] = {
    "llama2-7b": Shape(CAUSAL, {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                                "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000,
                                "max_position_embeddings": 4096}),
    "t5-3b": Shape(SEQ2SEQ, {"d_model": 1024, "d_ff": 16384, "num_layers": 24, "num_heads": 32, "d_kv": 128,
                             "vocab_size": 32128}),
    "tiny-llama": Shape(CAUSAL, {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                                 "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 1000,
                                 "max_position_embeddings": 512}),
    "tiny-t5": Shape(SEQ2SEQ, {"d_model": 64, "d_ff": 128, "num_layers": 2, "num_heads": 4, "d_kv": 16,
                               "vocab_size": 1000}),
}


def random_model(name: str, device: torch.device, dtype: torch.dtype, seed: int = 0) -> torch.nn.Module:
    """A frozen, randomly initialised model of the named shape, built directly on `device` in `dtype`."""
    from transformers import LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

    shape = SHAPES[name]
    if shape.family is CAUSAL:
        config, kind = LlamaConfig(pad_token_id=0, **shape.config), LlamaForCausalLM
    else:
        config = T5Config(pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, **shape.config)
        kind = T5ForConditionalGeneration
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = kind(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval().requires_grad_(False)
