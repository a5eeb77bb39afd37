"""Speed and memory of every method against HF PEFT's prompt tuning, in one process.

Variants alternate round by round (each round runs every variant for a few training steps and a few evaluation
passes, in a rotated order), and the median of each is reported, so machine noise hits all of them alike.

- ours (`pt`, `lamp_p1/2/4`, `dpt`, `residual`, `dept`): `lamp_engine.train.train_step`, the very function the
  training loop calls: `backbone.loss` (prompt prepended, `use_cache=False`, causal logits only at target
  positions), backward, gradient clipping, AdamW step.
- the weight adapters (`lora`, `dora`, `pissa`, `rslora`, `loraplus`, `lora_ga`) and `full`: the same
  `train_step`, each on its own instance of the model (an adapter goes into its model in place), with no prompt.
- `peft_pt`: a second instance of the same model wrapped by `peft.get_peft_model(PromptTuningConfig)`, trained
  with AdamW on PEFT's standard forward with `labels` (the frozen model's own loss over all positions), with
  `use_cache=False` as a careful user would pass; evaluation keeps only the last position's logits.
- `floor`: the same model with no prompt tokens at all; a single trainable scalar gate multiplies the input
  embeddings, so the step still back-propagates through every layer down to the input, as any prompt must. No
  prompt method can be cheaper than this.
- `<name>+compile` (with --compile): the same step on a third instance of the model whose body runs under
  `torch.compile`, built exactly as `lamp train --compile` builds it (lamp_engine.backbones.compile_body).

Memory is the CUDA allocator's peak on GPU and the RSS high-water mark on CPU (reset per measurement through
/proc/self/clear_refs after returning freed heap to the system), both as the process's peak and as the increase
over what was resident when the measurement began.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import gc
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch

from bench.shapes import SHAPES, random_model
from lamp_engine.aliases import BackboneFamily
from lamp_engine.backbones import (
    FAMILIES,
    Backbone,
    Encoded,
    compile_body,
    cpu_flags,
    load_backbone,
    native_bf16,
    resolve_device,
    resolve_dtype,
)
from lamp_engine.config import DTYPES, DataConfig, TrainConfig
from lamp_engine.errors import ConfigError
from lamp_engine.measure import peak_memory_mb, reset_peak_memory
from lamp_engine.methods import METHODS, LampConfig, MethodConfig, MethodFamily, PromptTuningConfig, method_config
from lamp_engine.modules import MethodModule, build_method
from lamp_engine.prompts import SoftPrompt, build_prompt, sample_vocabulary_rows, vocabulary_prompt
from lamp_engine.train import train_step

LAMP_POOLS = (1, 2, 4)  # LAMP is measured at each of these pool sizes, every other method once
OURS = tuple(variant for name in METHODS
             for variant in ([f"lamp_p{p}" for p in LAMP_POOLS] if name == "lamp" else [name]))
COMPILED = ("floor", "pt", "lamp_p4")
ALL_VARIANTS = ("floor", *OURS, "peft_pt")


@dataclass
class SpeedSettings:
    """One speed setting: the model, the batch shape and how long to measure."""

    model: str = "smollm2-135m"
    shape: str | None = None  # random-init shape name (SHAPES), instead of `model`
    device: str = "cpu"
    dtype: str = "auto"  # the frozen models' weights, as `lamp train --dtype`: auto is bf16 on CUDA, fp32 on CPU
    batch_size: int = 8
    source_length: int = 128
    length: int = 100
    rank: int = 8
    rounds: int = 5
    warmup_rounds: int = 1
    steps: int = 2
    eval_repeats: int = 1
    variants: tuple[str, ...] = ALL_VARIANTS
    compile: bool = False
    task: str = "sst2"
    data_dir: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("batch_size", "source_length", "length", "rank", "rounds", "steps", "eval_repeats"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name.replace('_', '-')}: must be positive, got {getattr(self, name)}")
        if self.warmup_rounds < 0:
            raise ConfigError(f"warmup-rounds: must be >= 0, got {self.warmup_rounds}")
        unknown = [v for v in self.variants if v not in ALL_VARIANTS]
        if unknown:
            raise ConfigError(f"variants: unknown {', '.join(unknown)}; choose from {', '.join(ALL_VARIANTS)}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype: must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.shape is not None and self.shape not in SHAPES:
            raise ConfigError(f"shape: unknown {self.shape!r}; choose one of {', '.join(SHAPES)}")
        for pool in (int(v.split("_p")[1]) for v in self.variants if v.startswith("lamp_p")):
            if self.length % pool:
                raise ConfigError(f"length: {self.length} is not divisible by LAMP's pool size {pool}")


@dataclass
class Variant:
    """One measured configuration and its samples."""

    name: str
    step: Callable[[], None]
    evaluate: Callable[[], None]
    trainable_params: int
    prompt_tokens: int
    step_seconds: list[float] = field(default_factory=list)
    eval_seconds: list[float] = field(default_factory=list)
    peak_mb: list[float] = field(default_factory=list)
    step_mb: list[float] = field(default_factory=list)


class NoPrompt(SoftPrompt):
    """The floor: zero prompt rows, and one scalar gate on the input embeddings so gradients reach the input."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__(PromptTuningConfig())
        self.hidden_size = hidden_size
        self.gate = torch.nn.Parameter(torch.ones(()))

    def forward(self) -> torch.Tensor:
        return self.gate.new_zeros(0, self.hidden_size)

    def adjust_input_embeds(self, embeds: torch.Tensor) -> torch.Tensor:
        return embeds * self.gate.to(embeds.dtype)


# --- measurement -----------------------------------------------------------------------------------------------

def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release_memory(device: torch.device) -> None:
    """Free what earlier variants left so one variant's peak is not another's leftovers."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def resident_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def timed(fn: Callable[[], None], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def measure_round(variant: Variant, settings: SpeedSettings, device: torch.device, keep: bool) -> None:
    """`steps` training steps (their peak memory) then `eval_repeats` evaluation passes."""
    release_memory(device)
    reset_peak_memory(device)
    base = resident_mb(device)
    steps = [timed(variant.step, device) for _ in range(settings.steps)]
    peak = peak_memory_mb(device)
    evals = [timed(variant.evaluate, device) for _ in range(settings.eval_repeats)]
    if keep:
        variant.step_seconds += steps
        variant.eval_seconds += evals
        variant.peak_mb.append(peak)
        variant.step_mb.append(peak - base)


# --- the workload ----------------------------------------------------------------------------------------------

def real_batch(backbone: Backbone, settings: SpeedSettings) -> list[Encoded]:
    """`batch_size` task examples whose sources are real text filled and cut to exactly `source_length` tokens."""
    from lamp_engine.tasks import get_task

    examples = get_task(settings.task).load(DataConfig(data_dir=settings.data_dir), settings.seed).train
    texts = [e.source for e in examples]
    batch = []
    for i, example in enumerate(examples[:settings.batch_size]):
        long_text = " ".join(texts[i:i + 64])  # following sentences fill the window with real text
        batch.append(backbone.encode(dataclasses.replace(example, source=long_text)))
    lengths = {len(e.source) for e in batch}
    if len(lengths) != 1 or len(batch) < settings.batch_size:
        raise ConfigError(f"source-length: {settings.task} text does not fill {settings.source_length} tokens "
                          f"for {settings.batch_size} examples; use a shorter --source-length")
    return batch


def synthetic_batch(vocab_size: int, settings: SpeedSettings) -> list[Encoded]:
    """Random token ids (a random-init model has no tokenizer): two one-token label words."""
    generator = torch.Generator().manual_seed(settings.seed)
    sources = torch.randint(10, vocab_size, (settings.batch_size, settings.source_length), generator=generator)
    words = [[3], [4]]
    return [Encoded(row.tolist(), words[i % 2], words, i % 2, False) for i, row in enumerate(sources)]


def peft_inputs(batch: list[Encoded], family: BackboneFamily, device: torch.device) -> dict[str, torch.Tensor]:
    """The same batch as PEFT's standard forward takes it: ids, mask and labels (-100 where no loss)."""
    from lamp_engine.backbones.base import pad, pad_mask

    if family is BackboneFamily.CAUSAL:
        rows = [e.source + e.target for e in batch]
        labels = [[-100] * len(e.source) + e.target for e in batch]
        return {"input_ids": pad(rows, 0).to(device), "attention_mask": pad_mask(rows).to(device),
                "labels": pad(labels, -100).to(device)}
    sources = [e.source for e in batch]
    return {"input_ids": pad(sources, 0).to(device), "attention_mask": pad_mask(sources).to(device),
            "labels": pad([e.target for e in batch], -100).to(device)}


# --- variants --------------------------------------------------------------------------------------------------

def engine_variant(name: str, backbone: Backbone, prompt: MethodModule, batch: list[Encoded]) -> Variant:
    """The engine's training step and evaluation, the very functions lamp_engine.train runs."""
    optimizer = torch.optim.AdamW(prompt.param_groups(1e-3), weight_decay=1e-5)

    def step() -> None:
        train_step(backbone, prompt, batch, optimizer, max_grad_norm=1.0)

    def evaluate() -> None:
        with torch.inference_mode():
            backbone.choice_scores(prompt, batch)

    tokens = 0 if isinstance(prompt, NoPrompt) else prompt().shape[0]
    return Variant(name, step, evaluate, prompt.num_trainable(), tokens)


def peft_variant(model: torch.nn.Module, family: BackboneFamily, batch: list[Encoded], settings: SpeedSettings,
                 device: torch.device) -> Variant:
    """HF PEFT's prompt tuning on its own model instance, trained on the standard forward with labels."""
    from peft import PromptTuningConfig, TaskType, get_peft_model

    task_type = TaskType.CAUSAL_LM if family is BackboneFamily.CAUSAL else TaskType.SEQ_2_SEQ_LM
    config = PromptTuningConfig(task_type=task_type, num_virtual_tokens=settings.length,
                                num_transformer_submodules=1)  # seq2seq: the encoder's prompt only, as ours
    peft_model = get_peft_model(model, config)
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=0.01, weight_decay=1e-5)
    inputs = peft_inputs(batch, family, device)

    def step() -> None:
        loss = peft_model(**inputs, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()

    choice_ids = torch.tensor([c[0] for c in batch[0].choices], device=device)
    sources = {"input_ids": inputs["input_ids"][:, :len(batch[0].source)],
               "attention_mask": inputs["attention_mask"][:, :len(batch[0].source)]}

    def evaluate() -> None:
        with torch.inference_mode():
            if family is BackboneFamily.CAUSAL:  # the next token's log-probabilities, only at the last position
                logits = peft_model(**sources, use_cache=False, logits_to_keep=1).logits[:, -1]
                torch.log_softmax(logits.float(), dim=-1)[:, choice_ids].tolist()
                return
            for choice in batch[0].choices:  # one labelled forward per candidate label word
                labels = torch.tensor([choice] * len(batch), device=device)
                peft_model(**sources, labels=labels, use_cache=False).logits.float().log_softmax(-1).sum().item()

    return Variant("peft_pt", step, evaluate, sum(p.numel() for p in trainable), settings.length)


def fresh_backbone(settings: SpeedSettings, device: torch.device, compile: bool = False) -> Backbone:
    """One more instance of the model (ours, PEFT's, a compiled one, one per weight adapter: an adapter changes
    its model in place), built as `lamp train` builds it."""
    train = train_config(settings, device, compile=compile)
    if not settings.shape:
        return load_backbone(settings.model, train)
    model = random_model(settings.shape, device, resolve_dtype(settings.dtype, device), settings.seed)
    backbone = FAMILIES[SHAPES[settings.shape].family](model, SimpleNamespace(pad_token_id=0), device, train)
    if compile:
        compile_body(backbone)
    return backbone


def method_settings(name: str, settings: SpeedSettings) -> MethodConfig:
    """The variant's method at the bench's l and r (r is the rank of every method that has one)."""
    if name.startswith("lamp_p"):
        return LampConfig(length=settings.length, rank=settings.rank, pool=int(name[6:]))
    own = {"length": settings.length, "rank": settings.rank,
           "dept_length": max(1, settings.length * 3 // 5)}  # DePT's 60 of 100, at the bench's length
    if name == "dept":
        own.pop("rank")  # DePT's rank follows from PT's budget
    return method_config(name, **{k: v for k, v in own.items() if k in METHODS[name].field_names()})


# --- the bench -------------------------------------------------------------------------------------------------

def train_config(settings: SpeedSettings, device: torch.device, compile: bool = False) -> TrainConfig:
    return TrainConfig(max_source_length=settings.source_length, device=device.type, dtype=settings.dtype,
                       batch_size=settings.batch_size, compile=compile)


def load_models(settings: SpeedSettings, device: torch.device) -> tuple[Backbone, torch.nn.Module, list[Encoded]]:
    """Our backbone, a second model instance for PEFT, and the fixed batch."""
    backbone = fresh_backbone(settings, device)
    vocab_size = backbone.model.config.vocab_size
    batch = synthetic_batch(vocab_size, settings) if settings.shape else real_batch(backbone, settings)
    second = fresh_backbone(settings, device).model if "peft_pt" in settings.variants else None
    return backbone, second, batch


def initial_rows(backbone: Backbone, settings: SpeedSettings) -> torch.Tensor:
    generator = torch.Generator().manual_seed(settings.seed)
    if settings.shape:
        embeddings = backbone.model.get_input_embeddings()
        return sample_vocabulary_rows(embeddings, list(range(10, min(5010, embeddings.num_embeddings))),
                                      settings.length, generator)
    return vocabulary_prompt(backbone, settings.length, generator)[0]


def build_variants(settings: SpeedSettings, device: torch.device) -> list[Variant]:
    backbone, second, batch = load_models(settings, device)
    if backbone.family is BackboneFamily.ENCODER:
        raise ConfigError(f"model: the speed bench compares with PEFT's prompt tuning, which needs a causal or "
                          f"seq2seq model; {settings.model} is a {backbone.family} model")
    init = initial_rows(backbone, settings)
    compiled = fresh_backbone(settings, device, compile=True) if settings.compile else None
    variants = []
    for name in settings.variants:
        if name == "peft_pt":
            variants.append(peft_variant(second, backbone.family, batch, settings, device))
            continue
        if name in METHODS and METHODS[name].family is not MethodFamily.SOFT_PROMPT:
            own = fresh_backbone(settings, device)
            method, _ = build_method(method_settings(name, settings), own, torch.Generator().manual_seed(0),
                                     settings.source_length, [batch])
            variants.append(engine_variant(name, own, method, batch))
            continue
        for which, bb in (("", backbone), ("+compile", compiled)):
            if bb is None or (which and name not in COMPILED):
                continue
            if name == "floor":
                prompt = NoPrompt(backbone.hidden_size).to(device)
            else:
                prompt = build_prompt(method_settings(name, settings), init, settings.source_length).to(device)
            variants.append(engine_variant(name + which, bb, prompt, batch))
    return variants


def run_speed(settings: SpeedSettings, log: Callable[[str], None] = print) -> dict:
    """Measure every variant in interleaved rounds; returns the report (settings, machine, per-variant numbers)."""
    device = resolve_device(settings.device)
    torch.manual_seed(settings.seed)
    load_start = os.getloadavg()[0]
    variants = build_variants(settings, device)
    for round_index in range(settings.warmup_rounds + settings.rounds):
        keep = round_index >= settings.warmup_rounds
        shift = round_index % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            measure_round(variant, settings, device, keep)
        label = "measured" if keep else "warm-up"
        log(f"round {round_index + 1}/{settings.warmup_rounds + settings.rounds} ({label}) done, "
            f"load {os.getloadavg()[0]:.2f}")
    report = {"settings": dataclasses.asdict(settings),
              "machine": machine(device, load_start, os.getloadavg()[0]),
              "variants": {v.name: summarize(v, settings.batch_size) for v in variants}}
    add_ratios(report["variants"])
    return report


def summarize(variant: Variant, batch_size: int) -> dict:
    return {
        "step_seconds_median": statistics.median(variant.step_seconds),
        "step_seconds_min": min(variant.step_seconds),
        "step_samples": len(variant.step_seconds),
        "eval_examples_per_second": batch_size / statistics.median(variant.eval_seconds),
        "peak_memory_mb": statistics.median(variant.peak_mb),
        "step_memory_mb": statistics.median(variant.step_mb),
        "trainable_params": variant.trainable_params,
        "prompt_tokens": variant.prompt_tokens,
    }


def add_ratios(variants: dict[str, dict]) -> None:
    """Each variant's step time and memory as a multiple of peft_pt's (and of our pt's)."""
    for reference in ("peft_pt", "pt"):
        base = variants.get(reference)
        if base is None:
            continue
        for numbers in variants.values():
            numbers[f"step_vs_{reference}"] = numbers["step_seconds_median"] / base["step_seconds_median"]
            numbers[f"peak_vs_{reference}"] = numbers["peak_memory_mb"] / base["peak_memory_mb"]
            numbers[f"step_memory_vs_{reference}"] = numbers["step_memory_mb"] / max(base["step_memory_mb"], 1e-9)


def machine(device: torch.device, load_start: float, load_end: float) -> dict:
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpus": os.cpu_count(), "cpu_model": cpu, "cpu_bf16": native_bf16(cpu_flags()),
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "load_average_start": load_start, "load_average_end": load_end}


def markdown(report: dict) -> str:
    """The report as a Markdown table, ratios to peft_pt."""
    s, m = report["settings"], report["machine"]
    where = m["gpu"] or f"{m['cpus']} x {m['cpu_model']}"
    model = f"random-init {s['shape']}" if s["shape"] else s["model"]
    dtype = str(resolve_dtype(s.get("dtype", "auto"), torch.device(s["device"]))).removeprefix("torch.")
    lines = [f"{model} ({dtype}), batch {s['batch_size']}, source length {s['source_length']}, l = {s['length']}, "
             f"r = {s['rank']}, {s['rounds']} rounds x {s['steps']} steps (+{s['warmup_rounds']} warm-up), "
             f"on {where}, load {m['load_average_start']:.2f} -> {m['load_average_end']:.2f}", "",
             "| variant | prompt tokens | trainable params | step s (median) | step vs peft_pt | step vs pt | "
             "eval ex/s | peak MB | peak vs peft_pt | step MB | step MB vs peft_pt |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, v in report["variants"].items():
        lines.append(f"| {name} | {v['prompt_tokens']} | {v['trainable_params']:,} | {v['step_seconds_median']:.3f} "
                     f"| {ratio(v, 'step_vs_peft_pt')} | {ratio(v, 'step_vs_pt')} | "
                     f"{v['eval_examples_per_second']:.1f} | {v['peak_memory_mb']:.0f} | {ratio(v, 'peak_vs_peft_pt')} "
                     f"| {v['step_memory_mb']:.0f} | {ratio(v, 'step_memory_vs_peft_pt')} |")
    return "\n".join(lines) + "\n"


def ratio(numbers: dict, key: str) -> str:
    return f"{numbers[key]:.2f}x" if key in numbers else "-"
