"""Training end to end on real (offline) models: the run folder, reloading, PEFT export, stop and resume."""

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lamp_common.result import Outcome, RunResult
from lamp_engine import backbones
from lamp_engine.backbones import cpu_flags, load_backbone, native_bf16, resolve_dtype
from lamp_engine.config import RunConfig, TrainConfig
from lamp_engine.errors import ConfigError, TaskError
from lamp_engine.export import load_prompt
from lamp_engine.prompts import build_prompt, vocabulary_prompt
from lamp_engine.train import Callbacks, train

DATA = (Path(__file__).resolve().parents[2] / "shared" / "data").resolve()


def tiny(**overrides) -> RunConfig:
    values = {"model": "tiny-t5", "task": "sst2", "data_dir": str(DATA), "method": "lamp", "length": 8, "rank": 2,
              "pool": 2, "steps": 4, "batch_size": 4, "max_eval_examples": 8, "eval_every": 2}
    values = {**values, **overrides}
    if values["method"] != "lamp":  # the defaults above are LAMP's; another method keeps only its own
        values = {k: v for k, v in values.items() if k not in ("rank", "pool") or k in overrides}
    return RunConfig.from_flat(values)


def rebuild(folder: Path, config: RunConfig, hidden: int):
    saved = load_prompt(folder)
    prompt = build_prompt(config.method, torch.zeros(config.method.length, hidden), config.train.max_source_length)
    prompt.load_state_dict(saved["params"])
    return prompt, saved


def test_tiny_run_writes_every_result_field(tmp_path):
    result = train(tiny(), tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert RunResult.from_dict(saved) == result
    assert saved["prompt_params"] == 8 * 2 + 2 + 2 * 64 == saved["trainable_params"]
    assert saved["head_params"] == 0 and saved["prompt_tokens"] == 4 and saved["hidden_size"] == 64
    assert saved["total_params"] > 2_000_000
    assert [p["step"] for p in saved["history"]["train"]] == [1, 2, 3, 4]
    assert [p["step"] for p in saved["history"]["eval"]] == [2, 4]
    assert 0 <= saved["metrics"]["accuracy"] <= 100 and saved["best_metrics"]["step"] in (2, 4)
    assert "SST-2/dev.txt" in saved["split_policy"]["test"]
    assert saved["config"]["train"]["lr"] == 0.3  # the seq2seq family's default, resolved
    assert result.peak_memory_mb > 100 and result.eval_examples_per_second > 0
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "dispersion.json", "peft", "prompt.safetensors", "result.json", "tokens.safetensors", "trainer_state.pt"]
    spread = json.loads((tmp_path / "run" / "dispersion.json").read_text())
    assert spread["prompt"]["before"]["mean_pairwise_distance"] > 0
    tokens = load_file(str(tmp_path / "run" / "tokens.safetensors"))
    assert tokens["before.prompt"].shape == tokens["after.prompt"].shape == (4, 64)  # l / p pooled tokens
    assert tokens["before.unpooled"].shape == tokens["after.unpooled"].shape == (8, 64)  # C, l tokens
    assert saved["prompt_init"].startswith("the first 5,000 WordPiece whole words")  # tiny-t5: MiniLM's vocabulary


def test_a_trained_pt_prompt_keeps_its_before_apart_from_its_after(tmp_path):
    """The initial prompt is a copy: on CPU, an fp32 parameter's detached view would change with training."""
    train(tiny(method="pt", length=8, eval_every=0), tmp_path / "run")
    tokens = load_file(str(tmp_path / "run" / "tokens.safetensors"))
    assert set(tokens) == {"before.prompt", "after.prompt"}
    assert (tokens["before.prompt"] - tokens["after.prompt"]).abs().max() > 1e-3
    figures = json.loads((tmp_path / "run" / "dispersion.json").read_text())["prompt"]
    assert figures["before"]["mean_pairwise_distance"] != figures["after"]["mean_pairwise_distance"]


@pytest.mark.slow
def test_cpu_runs_repeat_exactly(tmp_path):
    first = train(tiny(), tmp_path / "a").history["train"]
    second = train(tiny(), tmp_path / "b").history["train"]
    assert [p["loss"] for p in first] == [p["loss"] for p in second]
    assert load_file(str(tmp_path / "a" / "prompt.safetensors"))["prompt"].equal(
        load_file(str(tmp_path / "b" / "prompt.safetensors"))["prompt"])


@pytest.mark.slow
def test_saved_prompt_reloads_bit_identical(tmp_path):
    config = tiny(method="lamp", pool=1, attention_pool=True)
    train(config, tmp_path / "run")
    prompt, saved = rebuild(tmp_path / "run", config, 64)
    with torch.no_grad():
        assert torch.equal(prompt(), saved["prompt"])


def test_gradients_reach_u_q_and_v_only():
    config = tiny()
    backbone = load_backbone("tiny-t5", TrainConfig(max_source_length=32))
    prompt = build_prompt(config.method, vocabulary_prompt(backbone, 8, torch.Generator().manual_seed(0))[0], 32)
    from lamp_engine.tasks import Example

    example = Example("sentence: a fine film", "positive", ("negative", "positive"))
    backbone.loss(prompt, [backbone.encode(example)]).backward()
    assert {name for name, p in prompt.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0} == {
        "U", "Q", "V"}
    assert all(p.grad is None and not p.requires_grad for p in backbone.model.parameters())


@pytest.mark.slow
def test_peft_folder_reproduces_our_seq2seq_logits(tmp_path):
    from peft import PeftModel

    config = tiny()
    train(config, tmp_path / "run")
    backbone = load_backbone("tiny-t5", config.train)
    prompt, _ = rebuild(tmp_path / "run", config, 64)
    ids = backbone.tokenizer(["a fine film", "dull"], padding=True, return_tensors="pt")
    decoder = torch.tensor([[0, 5, 6], [0, 7, 8]])
    with torch.no_grad():
        ours = backbone.logits(prompt, ids.input_ids, ids.attention_mask, decoder_input_ids=decoder)
        peft_model = PeftModel.from_pretrained(load_backbone("tiny-t5", config.train).model, tmp_path / "run" / "peft")
        theirs = peft_model(input_ids=ids.input_ids, attention_mask=ids.attention_mask,
                            decoder_input_ids=decoder).logits
    torch.testing.assert_close(ours, theirs)


@pytest.mark.slow
def test_peft_folder_reproduces_our_causal_logits(tmp_path):
    from peft import PeftModel

    config = tiny(model="smollm2-135m", steps=1, batch_size=2, eval_every=0, max_eval_examples=2, method="pt")
    train(config, tmp_path / "run")
    backbone = load_backbone("smollm2-135m", config.train)
    prompt, _ = rebuild(tmp_path / "run", config, 576)
    ids = backbone.tokenizer(["a fine film", "dull and long"], return_tensors="pt", padding=True)
    with torch.no_grad():
        ours = backbone.logits(prompt, ids.input_ids, ids.attention_mask)
        base = load_backbone("smollm2-135m", config.train).model
        theirs = PeftModel.from_pretrained(base, tmp_path / "run" / "peft")(
            input_ids=ids.input_ids, attention_mask=ids.attention_mask).logits
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_stop_saves_the_partial_prompt_and_resume_finishes(tmp_path):
    steps_seen = []
    callbacks = Callbacks(on_step=lambda step, total, values, seconds: steps_seen.append(step),
                          should_stop=lambda: len(steps_seen) >= 2)
    stopped = train(tiny(steps=6, eval_every=0), tmp_path / "run", callbacks)
    assert stopped.status is Outcome.STOPPED and stopped.steps == 2 and stopped.metrics == {}
    assert (tmp_path / "run" / "prompt.safetensors").is_file()
    resumed = train(tiny(steps=6, eval_every=0), tmp_path / "run", resume=True)
    assert resumed.status is Outcome.COMPLETED and resumed.steps == 6
    assert [p["step"] for p in resumed.history["train"]] == [1, 2, 3, 4, 5, 6]
    uninterrupted = train(tiny(steps=6, eval_every=0), tmp_path / "straight")
    assert [p["loss"] for p in resumed.history["train"]] == pytest.approx(
        [p["loss"] for p in uninterrupted.history["train"]], rel=1e-5)


@pytest.mark.parametrize(("overrides", "error", "message"), [
    ({"rank": 70, "length": 100, "pool": 1}, ConfigError, "^rank: rank 70 exceeds min"),
    ({"data_dir": "/nonexistent/data"}, TaskError, "no data source available"),
    ({"task": "no-such-task"}, TaskError, "unknown task"),
])
def test_invalid_runs_leave_no_folder(tmp_path, overrides, error, message):
    with pytest.raises(error, match=message):
        train(tiny(**overrides), tmp_path / "run")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_encoder_training_lowers_the_loss_on_sst2(tmp_path):
    config = RunConfig.from_flat({"model": "minilm-l6", "task": "sst2", "data_dir": str(DATA), "method": "lamp",
                                  "steps": 60, "batch_size": 16, "max_eval_examples": 64})
    result = train(config, tmp_path / "run")
    losses = [p["loss"] for p in result.history["train"]]
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 0.05
    assert result.head_params == 384 * 2 + 2
    assert result.prompt_params == 100 * 8 + 8 + 8 * 384
    assert result.trainable_params == result.prompt_params + result.head_params


def test_predict_scores_typed_text_with_the_trained_prompt(tmp_path):
    from lamp_engine.predict import predict

    train(tiny(), tmp_path / "run")
    out = predict(tmp_path / "run", ["a warm , funny film", "dull"])
    assert [o["source"] for o in out] == ["sentence: a warm , funny film", "sentence: dull"]
    assert all(set(o["scores"]) == {"negative", "positive"} for o in out)
    assert all(o["prediction"] == max(o["scores"], key=o["scores"].get) for o in out)
    assert all(score < 0 for o in out for score in o["scores"].values())  # log-likelihoods


@pytest.mark.slow
def test_causal_single_token_shortcut_scores_like_the_full_path():
    from lamp_engine.tasks import Example

    backbone = load_backbone("smollm2-135m", TrainConfig(max_source_length=32))
    rows = vocabulary_prompt(backbone, 8, torch.Generator().manual_seed(0))[0]
    prompt = build_prompt(tiny(method="pt").method, rows, 32)
    batch = [backbone.encode(Example(f"sentence: {text}", "positive", ("negative", "positive")))
             for text in ("a warm film", "a dull , long , tired film")]
    assert all(len(choice) == 1 for e in batch for choice in e.choices)
    with torch.no_grad():
        shortcut = backbone.choice_scores(prompt, batch)
        full = [[float(lp.sum()) for lp in backbone.target_log_probs(prompt, [e.source] * 2, e.choices)] for e in batch]
    torch.testing.assert_close(torch.tensor(shortcut), torch.tensor(full), atol=1e-4, rtol=1e-4)


def test_bf16_on_a_cpu_without_native_bf16_warns_in_one_line_and_fp32_does_not(monkeypatch, caplog):
    assert cpu_flags().startswith("flags")  # read from this Linux machine's /proc/cpuinfo
    assert native_bf16("flags : fpu avx2 avx512f avx512_bf16") and native_bf16("flags : fpu avx2 amx_bf16 amx_tile")
    assert not native_bf16("flags : fpu sse4_2 avx2 avx512f")
    monkeypatch.setattr(backbones, "cpu_flags", lambda: "flags : fpu sse4_2 avx2")
    with caplog.at_level(logging.WARNING):
        assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
        assert resolve_dtype("fp32", torch.device("cpu")) == torch.float32
        assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    (message,) = caplog.messages
    assert message.startswith("dtype bf16: this CPU has neither avx512_bf16 nor AMX") and "--dtype fp32" in message


@pytest.mark.slow
def test_bf16_backbone_on_cpu_scores_like_fp32_and_trains_an_fp32_prompt(tmp_path):
    from lamp_engine.tasks import Example

    scores = {}
    for dtype, weights in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        backbone = load_backbone("smollm2-135m", TrainConfig(max_source_length=32, device="cpu", dtype=dtype))
        assert {p.dtype for p in backbone.model.parameters()} == {weights}
        prompt = build_prompt(tiny(method="lamp", pool=1).method,
                              vocabulary_prompt(backbone, 8, torch.Generator().manual_seed(0))[0].float(), 32)
        batch = [backbone.encode(Example(f"sentence: {text}", "positive", ("negative", "positive")))
                 for text in ("a warm film", "a dull , long , tired film")]
        with torch.no_grad():
            scores[dtype] = torch.tensor(backbone.choice_scores(prompt, batch))
    torch.testing.assert_close(scores["bf16"], scores["fp32"], atol=0.15, rtol=0.05)  # bf16 keeps 8 mantissa bits
    result = train(tiny(dtype="bf16", eval_every=0), tmp_path / "run")
    assert result.config["train"]["dtype"] == "bf16"
    assert all(torch.isfinite(torch.tensor(p["loss"])) for p in result.history["train"])
    assert load_file(str(tmp_path / "run" / "prompt.safetensors"))["prompt"].dtype == torch.float32


@pytest.mark.slow
def test_a_checkpoint_taken_mid_run_resumes_elsewhere_to_the_same_losses(tmp_path):
    """The worker stores checkpoints; a retry on another host puts the last one in a fresh folder and resumes."""
    kept: dict[int, bytes] = {}
    callbacks = Callbacks(checkpoint_due=lambda step: step % 2 == 0,
                          on_checkpoint=lambda step, path: kept.__setitem__(step, path.read_bytes()),
                          should_stop=lambda: len(kept) == 2)
    train(tiny(steps=6, eval_every=0), tmp_path / "first", callbacks)
    assert sorted(kept) == [2, 4]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "trainer_state.pt").write_bytes(kept[4])
    resumed = train(tiny(steps=6, eval_every=0), elsewhere, resume=True)
    straight = train(tiny(steps=6, eval_every=0), tmp_path / "straight")
    assert [p["step"] for p in resumed.history["train"]] == [1, 2, 3, 4, 5, 6]
    assert [p["loss"] for p in resumed.history["train"]] == pytest.approx(
        [p["loss"] for p in straight.history["train"]], rel=1e-5)


@pytest.mark.slow
def test_evaluation_every_epoch_keeps_the_best_prompt_and_patience_stops_early(tmp_path):
    config = tiny(k_shot=8, batch_size=4, steps=None, epochs=10, eval_every="epoch", patience=2, pool=1)
    result = train(config, tmp_path / "run")
    evaluations = result.history["eval"]
    assert [e["step"] for e in evaluations][:3] == [2, 4, 6]  # 8 examples, batch 4: an evaluation every 2 steps
    scores = [e["accuracy"] for e in evaluations]
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))  # the first evaluation with the best score
    assert result.best_metrics["step"] == evaluations[best]["step"]
    assert result.early_stop_step == evaluations[-1]["step"] < 20  # stopped before its 10 epochs (20 steps)
    assert len(scores) - 1 - best == 2 and result.steps == result.early_stop_step
