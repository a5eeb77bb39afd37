"""The research levers of bench/ablations.py: each does what the research log says it did, and none is an engine
option (the registry, the form and the command line never offer them)."""

import pytest
import torch

from bench.ablations import LEVERS, LampAblation, LampAblationConfig, whole_words, with_levers
from bench.curve import CurveSettings
from lamp_engine.backbones import load_backbone
from lamp_engine.config import RunConfig, TrainConfig, flat_fields
from lamp_engine.errors import ConfigError
from lamp_engine.methods import METHODS, LampConfig
from lamp_engine.prompts import build_prompt
from lamp_engine.prompts.lamp import Lamp


def vocab_rows(l: int, d: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(l, d, generator=torch.Generator().manual_seed(seed))


def ablation(**settings) -> LampAblation:
    return LampAblation(LampAblationConfig(length=24, rank=5, pool=4, **settings), vocab_rows(24, 32), 64)


def test_the_levers_are_no_engine_option():
    assert {"factor_lr", "prompt_scale", "pool_init", "residual", "init_vocabulary"} == LEVERS
    assert "lamp_ablation" not in METHODS
    assert not LEVERS & set(flat_fields())
    with pytest.raises(ConfigError, match=r"^factor_lr: retired \(a research option of LAMP.s"):
        RunConfig.from_flat({"method": "lamp", "factor_lr": "scaled"})


def test_every_lever_at_its_default_is_the_engines_lamp():
    plain = build_prompt(LampConfig(length=24, rank=5, pool=4), vocab_rows(24, 32), 64)
    with torch.no_grad():
        torch.testing.assert_close(ablation()(), plain())
        torch.testing.assert_close(ablation().R, plain.R)


def test_the_papers_levers_feed_the_pooled_rank_r_truncation_of_p():
    P = vocab_rows(24, 32)
    U, S, Vh = torch.linalg.svd(P, full_matrices=False)
    paper = ablation(pool_init="rows", residual="dropped")
    assert paper.num_trainable() == ablation().num_trainable() and torch.equal(paper.R, torch.zeros(24, 32))
    with torch.no_grad():
        truncated = U[:, :5] @ torch.diag(S[:5]) @ Vh[:5]
        torch.testing.assert_close(paper(), truncated.reshape(6, 4, 32).mean(dim=1), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(ablation()(), P.reshape(6, 4, 32).mean(dim=1), atol=1e-4, rtol=1e-4)


def test_the_row_start_draws_l_distinct_rows_and_the_block_start_the_engines():
    backbone = load_backbone("tiny-t5", TrainConfig(device="cpu"))
    config = LampAblationConfig(length=12, rank=2, pool=4)
    rows, _ = LampAblation.initial_prompt(LampAblationConfig(length=12, rank=2, pool=4, pool_init="rows"), backbone,
                                          torch.Generator().manual_seed(0))
    blocks, rule = LampAblation.initial_prompt(config, backbone, torch.Generator().manual_seed(0))
    engine, engine_rule = Lamp.initial_prompt(config, backbone, torch.Generator().manual_seed(0))
    assert len({tuple(row.tolist()) for row in rows}) == 12
    assert torch.equal(blocks, engine) and rule == engine_rule
    assert torch.equal(blocks, rows[:3].repeat_interleave(4, dim=0))  # the same draws: a run compares like with like


def test_matched_scale_gives_the_first_product_the_norm_of_p():
    P = vocab_rows(24, 32)
    matched = ablation(prompt_scale="matched", pool_init="rows", residual="dropped")
    with torch.no_grad():
        assert matched.unpooled().norm().item() == pytest.approx(P.norm().item(), rel=1e-4)
        assert ablation(residual="dropped").unpooled().norm() < 0.9 * matched.unpooled().norm()
        torch.testing.assert_close(ablation(prompt_scale="matched")(), P.reshape(6, 4, 32).mean(dim=1),
                                   atol=1e-4, rtol=1e-4)  # with R kept, the first prompt is still P


def test_scaled_factor_rates_follow_each_factors_size():
    prompt = ablation(factor_lr="scaled")
    rates = {id(group["params"][0]): group["lr"] for group in prompt.param_groups(0.01)}
    P_rms = vocab_rows(24, 32).pow(2).mean().sqrt().item()
    for factor in (prompt.U, prompt.Q, prompt.V):
        assert rates[id(factor)] == pytest.approx(0.01 * factor.detach().pow(2).mean().sqrt().item() / P_rms)
    assert [len(g["params"]) for g in ablation().param_groups(0.01)] == [3]  # equal: one group, as LAMP's


def test_whole_words_skip_bytes_pieces_and_special_tokens():
    backbone = load_backbone("smollm2-135m", TrainConfig(device="cpu"))
    ids = whole_words(backbone.tokenizer, limit=200)
    tokens = backbone.tokenizer.convert_ids_to_tokens(ids)
    assert len(ids) == 200 and all(t.lstrip("Ġ").isalpha() and len(t.lstrip("Ġ")) >= 2 for t in tokens)
    assert ids[0] > 100  # the first ids of a BPE vocabulary are single bytes


def test_a_variant_with_a_lever_runs_as_lamp_ablation_and_others_as_the_engine_method():
    settings = CurveSettings(variants=("pt", "lamp_p4", "lamp_p4[residual=dropped,pool_init=rows,rank=6]"),
                             steps=10, eval_at=(10,))
    plain = settings.run_config("lamp_p4", "sst2", 1)
    lever = settings.run_config("lamp_p4[residual=dropped,pool_init=rows,rank=6]", "sst2", 1)
    assert type(plain.method) is LampConfig
    assert isinstance(lever.method, LampAblationConfig)
    assert (lever.method.residual, lever.method.pool_init, lever.method.rank, lever.method.pool) == \
        ("dropped", "rows", 6, 4)
    with pytest.raises(ConfigError, match="apply to LAMP variants only"):
        with_levers(settings.run_config("pt", "sst2", 1), {"residual": "dropped"})
    with pytest.raises(ConfigError, match="residual: must be one of frozen, dropped"):
        CurveSettings(variants=("lamp_p4[residual=thawed]",), steps=10, eval_at=(10,)).run_config(
            "lamp_p4[residual=thawed]", "sst2", 1)
