"""Loading a frozen backbone by alias, hub id or local folder, and picking its family."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch

from lamp_engine.aliases import ALIASES, BackboneFamily
from lamp_engine.backbones.base import Backbone, Encoded, Prompt
from lamp_engine.backbones.causal import CausalBackbone
from lamp_engine.backbones.encoder import EncoderBackbone
from lamp_engine.backbones.offline import model_folder
from lamp_engine.backbones.seq2seq import Seq2SeqBackbone
from lamp_engine.config import TrainConfig
from lamp_engine.errors import ModelError

log = logging.getLogger(__name__)

FAMILIES: dict[BackboneFamily, type[Backbone]] = {kind.family: kind for kind in (Seq2SeqBackbone, CausalBackbone,
                                                                                  EncoderBackbone)}


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ModelError("device: cuda was asked for but no CUDA GPU is visible; use --device cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """auto: bf16 where it is native (CUDA), fp32 on CPU, where bf16 is fast only with avx512_bf16 or AMX."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name == "bf16" and device.type == "cpu" and not native_bf16(cpu_flags()):
        log.warning("dtype bf16: this CPU has neither avx512_bf16 nor AMX, so bf16 runs emulated, many times slower "
                    "than fp32; use --dtype fp32 (or auto)")
    return {"fp32": torch.float32, "bf16": torch.bfloat16}[name]


@functools.cache
def cpu_flags() -> str:
    """The CPU's feature flags as /proc/cpuinfo lists them (read once: they do not change while we run); empty
    where that file does not exist (not Linux)."""
    try:
        return next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")),
                    "")
    except OSError:
        return ""


def native_bf16(flags: str) -> bool:
    """Whether bf16 matrix products run natively: without avx512_bf16 or AMX, a smollm2-135m training step on
    bf16 weights took over 40 s against 5.2 s in fp32 (2 x AMD EPYC with avx2 only). Unknown flags count as yes."""
    return not flags or bool({"avx512_bf16", "amx_bf16"} & set(flags.split()))


def quiet_hub_logging() -> None:
    """Loading bars and retry warnings of transformers/huggingface_hub would bury our one-line messages."""
    import huggingface_hub.utils
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.logging.set_verbosity_error()
    huggingface_hub.utils.disable_progress_bars()


def load_backbone(name: str, train: TrainConfig) -> Backbone:
    """The frozen model and tokenizer, on the configured device and dtype (optionally 4-bit NF4)."""
    quiet_hub_logging()
    device = resolve_device(train.device)
    dtype = resolve_dtype(train.dtype, device)
    alias = ALIASES.get(name)
    family = alias.family if alias else detect_family(name)
    model, tokenizer = load_pretrained(model_folder(name), family, device, dtype, train.load_4bit)
    backbone = FAMILIES[family](model.eval(), tokenizer, device, train)
    if train.compile:
        compile_body(backbone)
    return backbone


def compile_body(backbone: Backbone, dynamic: bool | None = True) -> None:
    """torch.compile, in place, the modules each family actually calls.

    Wrapping the whole model (`torch.compile(model)`) misses them: the causal family calls `model.base_model`
    and seq2seq scoring calls `model.get_encoder()`, and a compiled wrapper hands both out uncompiled. Compiling
    in place also keeps the model's attribute names and state-dict keys.
    """
    model = backbone.model
    if backbone.family is BackboneFamily.CAUSAL:
        bodies = [model.base_model]
    elif backbone.family is BackboneFamily.SEQ2SEQ:
        bodies = [model.get_encoder(), model.get_decoder()]
    else:
        bodies = [model]
    for module in bodies:
        module.compile(dynamic=dynamic)


def detect_family(name: str) -> BackboneFamily:
    """seq2seq for encoder-decoder configs, causal for *ForCausalLM / *LMHeadModel, encoder otherwise."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as exc:
        where = "local folder" if Path(name).exists() else "model alias, local folder or reachable hub id"
        raise ModelError(f"model: {name!r} is not a {where} ({first_line(exc)}); "
                         f"offline aliases: {', '.join(ALIASES)}") from None
    if config.is_encoder_decoder:
        return BackboneFamily.SEQ2SEQ
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in config.architectures or []):
        return BackboneFamily.CAUSAL
    return BackboneFamily.ENCODER


def load_pretrained(folder: str, family: BackboneFamily, device: torch.device, dtype: torch.dtype, load_4bit: bool):
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    kwargs: dict = {"dtype": dtype}
    if load_4bit:
        kwargs["quantization_config"] = four_bit_config(device)
    loader = {BackboneFamily.SEQ2SEQ: AutoModelForSeq2SeqLM, BackboneFamily.CAUSAL: AutoModelForCausalLM,
              BackboneFamily.ENCODER: AutoModel}[family]
    try:
        model = loader.from_pretrained(folder, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise ModelError(f"model: cannot load {folder!r}: {first_line(exc)}") from None
    return (model if load_4bit else model.to(device)), tokenizer


def four_bit_config(device: torch.device):
    """NF4 with double quantisation and bf16 compute: the paper's QLoRA setting for 7B+ models."""
    if device.type != "cuda":
        raise ModelError("load_4bit: 4-bit loading needs a CUDA GPU (bitsandbytes); drop --load-4bit on CPU")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ModelError("load_4bit: bitsandbytes is not installed; run `pip install 'lamp-studio[gpu]'`") from None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


__all__ = ["FAMILIES", "Backbone", "Encoded", "Prompt", "compile_body", "load_backbone", "resolve_device",
           "resolve_dtype"]
