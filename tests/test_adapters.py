"""The LoRA family and full fine-tuning through PEFT, on the real offline models: counts before loading equal
PEFT's after, training lowers the loss, the saved adapter reloads with PEFT to our outputs, LoRA+'s groups, and
bad adapter settings end in one line naming the field."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lamp_engine.aliases import ALIASES
from lamp_engine.backbones import load_backbone
from lamp_engine.config import RunConfig, TrainConfig
from lamp_engine.errors import ConfigError
from lamp_engine.methods import METHODS, MethodFamily, method_config
from lamp_engine.modules import FixedPrompt, build_method
from lamp_engine.train import train

ROOT = Path(__file__).resolve().parents[1]
DATA = (ROOT.parent / "shared" / "data").resolve()
ADAPTERS = [name for name, kind in METHODS.items() if kind.family is MethodFamily.WEIGHT_ADAPTER]


def run_config(model: str, method: str, **overrides) -> RunConfig:
    """A few steps over the same 8 sentences (so the loss must fall), a small evaluation, a learning rate that
    moves an adapter within those steps, and LoRA-GA's gradients from one batch."""
    values = {"model": model, "task": "sst2", "method": method, "data_dir": str(DATA), "steps": 10,
              "batch_size": 4, "max_train_examples": 8, "max_eval_examples": 8, "max_source_length": 32,
              "lr": 5e-3, **({"gradient_batches": 1} if method == "lora_ga" else {}), **overrides}
    return RunConfig.from_flat(values)


@pytest.mark.parametrize("name", list(ALIASES))
def test_each_alias_shape_is_its_loaded_models(name):
    backbone = load_backbone(name, TrainConfig(device="cpu"))
    alias = ALIASES[name].shape
    assert set(backbone.shape.linears) == set(alias.linears)
    assert (backbone.shape.total_params, backbone.shape.model_type) == (alias.total_params, alias.model_type)


@pytest.mark.parametrize("model", ["smollm2-135m", "minilm-l6"])
@pytest.mark.parametrize("method", [*ADAPTERS, "full"])
def test_the_count_before_loading_is_pefts_after(model, method):
    config = method_config(method, **({"target_modules": "all-linear"} if method == "dora" else {}))
    before = config.trainable_params(ALIASES[model].shape)
    backbone = load_backbone(model, TrainConfig(device="cpu", max_source_length=32))
    backbone.prepare(examples(4))
    batches = [[backbone.encode(e) for e in examples(4)]]
    module, _ = build_method(config, backbone, torch.Generator().manual_seed(0), 32, batches)
    if method == "full":
        assert before == module.num_trainable() == sum(p.numel() for p in backbone.model.parameters())
    else:
        assert before == module.num_trainable() == module.peft_model.get_nb_trainable_parameters()[0]


def examples(n: int):
    from lamp_engine.tasks import Example

    texts = ["a warm , funny film", "dull and long", "a gripping story", "tired and flat"]
    return [Example(f"sentence: {texts[i % 4]}", ("positive", "negative")[i % 2], ("negative", "positive"))
            for i in range(n)]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["smollm2-135m", "minilm-l6"])
def test_every_adapter_method_lowers_the_loss(tmp_path, model):
    for method in ADAPTERS:
        result = train(run_config(model, method), tmp_path / method)
        losses = [p["loss"] for p in result.history["train"]]
        assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, (method, losses)
        assert result.prompt_tokens == 0 and result.trainable_params == result.prompt_params + result.head_params
        assert (tmp_path / method / "peft" / "adapter_config.json").is_file()
        assert not (tmp_path / method / "tokens.safetensors").exists()  # no prompt tokens to disperse


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "pissa"])  # PiSSA's adapter is converted against its start on saving
def test_the_saved_causal_adapter_reloads_with_peft_to_our_logits(tmp_path, method):
    from peft import PeftModel

    from lamp_engine.predict import load_trained

    config = run_config("smollm2-135m", method, steps=3)
    train(config, tmp_path / "run")
    ours, empty = load_trained(tmp_path / "run", config, examples(2))
    base = load_backbone("smollm2-135m", config.train).model  # untouched weights: PiSSA's was converted on save
    theirs = PeftModel.from_pretrained(base, tmp_path / "run" / "peft").eval()
    ids = ours.tokenizer(["a fine film", "dull and long"], return_tensors="pt", padding=True)
    with torch.no_grad():
        torch.testing.assert_close(ours.logits(empty, ids.input_ids, ids.attention_mask),
                                   theirs(input_ids=ids.input_ids, attention_mask=ids.attention_mask).logits,
                                   atol=2e-4, rtol=2e-4)


@pytest.mark.slow
def test_the_saved_encoder_adapter_and_head_reload_to_our_scores(tmp_path):
    from peft import PeftModel

    from lamp_engine.predict import predict

    config = run_config("minilm-l6", "lora", steps=3)
    train(config, tmp_path / "run")
    predicted = predict(tmp_path / "run", ["a warm , funny film"])[0]["scores"]
    backbone = load_backbone("minilm-l6", config.train)
    backbone.prepare(examples(2))
    from safetensors.torch import load_file

    backbone.head.load_state_dict(load_file(str(tmp_path / "run" / "head.safetensors")))
    PeftModel.from_pretrained(backbone.model, tmp_path / "run" / "peft")
    example = examples(1)[0].__class__("sentence: a warm , funny film", "positive", ("negative", "positive"))
    with torch.no_grad():
        scores = backbone.choice_scores(FixedPrompt.empty(384), [backbone.encode(example)])[0]
    assert scores == pytest.approx([predicted["negative"], predicted["positive"]], abs=1e-5)


def test_loraplus_puts_b_at_the_ratio_times_as_learning_rate():
    backbone = load_backbone("tiny-t5", TrainConfig(device="cpu", max_source_length=32))
    config = method_config("loraplus", loraplus_lr_ratio=8.0)
    module, _ = build_method(config, backbone, torch.Generator().manual_seed(0), 32, [])
    groups = module.param_groups(1e-3)
    names = {id(p): n for n, p in module.peft_model.named_parameters()}
    by_lr = {group["lr"]: {names[id(p)].split(".")[-3] for p in group["params"]} for group in groups}
    assert by_lr == {1e-3: {"lora_A"}, 8e-3: {"lora_B"}}


@pytest.mark.parametrize(("settings", "message"), [
    ({"rank": 0}, "rank: must be positive, got 0"),
    ({"alpha": 0.0}, "alpha: must be > 0 (alpha 0 makes the update vanish), got 0.0"),
    ({"alpha": -4.0}, "alpha: must be > 0"),
    ({"dropout": 1.0}, "dropout: must be in [0, 1), got 1.0"),
    ({"target_modules": "q proj"}, "target_modules: give 'auto', 'all-linear' or layer names"),
])
def test_bad_adapter_settings_name_the_field(settings, message):
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        method_config("lora", **settings)


def test_an_unknown_target_module_is_refused_before_the_model_loads(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-m", "lamp_cli", "train", "--model", "smollm2-135m", "--method", "lora",
                          "--target-modules", "q_proj,query", "--output", str(tmp_path / "run")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert run.stderr.startswith("lamp train: error: target_modules: 'query' is not a linear layer of this model; "
                                 "its linear layers are down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj")
    assert not (tmp_path / "run").exists()


def test_full_fine_tuning_and_pissa_refuse_4bit_weights():
    with pytest.raises(ConfigError, match="^load_4bit: full cannot train on 4-bit weights"):
        RunConfig.from_flat({"method": "full", "load_4bit": True})
    with pytest.raises(ConfigError, match="^load_4bit: pissa cannot train on 4-bit weights"):
        RunConfig.from_flat({"method": "pissa", "load_4bit": True})


@pytest.mark.parametrize("method", ["lora", "full"])
def test_a_stopped_adapter_run_resumes_to_the_same_losses(tmp_path, method):
    from lamp_engine.train import Callbacks

    config = RunConfig.from_flat({"model": "tiny-t5", "task": "sst2", "method": method, "data_dir": str(DATA),
                                  "steps": 6, "batch_size": 2, "max_eval_examples": 4, "max_source_length": 32})
    seen: list[int] = []
    stopped = train(config, tmp_path / "run", Callbacks(on_step=lambda step, total, values, seconds: seen.append(step),
                                                         should_stop=lambda: len(seen) >= 3))
    assert stopped.steps == 3
    resumed = train(config, tmp_path / "run", resume=True)
    straight = train(config, tmp_path / "straight")
    assert [p["loss"] for p in resumed.history["train"]] == pytest.approx(
        [p["loss"] for p in straight.history["train"]], rel=1e-5)
