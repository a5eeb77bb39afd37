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


def test_every_lever_off_is_the_papers_lamp():
    plain = build_prompt(LampConfig(length=24, rank=5, pool=4), vocab_rows(24, 32), 64)
    with torch.no_grad():
        torch.testing.assert_close(ablation()(), plain())


def test_block_init_pools_back_to_the_rank_r_prompt_of_the_first_l_over_p_rows():
    P = vocab_rows(24, 32)
    U, S, Vh = torch.linalg.svd(P[:6], full_matrices=False)  # l/p = 24/4 rows, each repeated 4 times
    blocks, rows = ablation(pool_init="blocks"), ablation()
    with torch.no_grad():
        torch.testing.assert_close(blocks(), U[:, :5] @ torch.diag(S[:5]) @ Vh[:5], atol=1e-4, rtol=1e-4)
        assert blocks().norm() > 1.2 * rows().norm()  # averaging distinct rows shrinks all but their shared part


def test_frozen_residual_starts_from_p_pooled_and_trains_only_the_rank_r_part():
    P = vocab_rows(24, 32)
    prompt, plain = ablation(residual="frozen"), ablation()
    assert prompt.num_trainable() == plain.num_trainable() and not prompt.R.requires_grad
    with torch.no_grad():
        torch.testing.assert_close(prompt(), P.reshape(6, 4, 32).mean(dim=1), atol=1e-4, rtol=1e-4)
        prompt.Q.mul_(1.5)
        plain.Q.mul_(1.5)
        torch.testing.assert_close(prompt() - plain(), (P - (plain.U * (plain.Q / 1.5) ** 2) @ plain.V.T)
                                   .reshape(6, 4, 32).mean(dim=1), atol=1e-4, rtol=1e-4)


def test_matched_scale_gives_the_first_unpooled_prompt_the_norm_of_p():
    matched = ablation(prompt_scale="matched")
    with torch.no_grad():
        assert matched.unpooled().norm().item() == pytest.approx(vocab_rows(24, 32).norm().item(), rel=1e-4)
        assert ablation().unpooled().norm() < 0.9 * matched.unpooled().norm()


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
    settings = CurveSettings(variants=("pt", "lamp_p4", "lamp_p4[residual=frozen,pool_init=blocks,rank=6]"),
                             steps=10, eval_at=(10,))
    plain = settings.run_config("lamp_p4", "sst2", 1)
    lever = settings.run_config("lamp_p4[residual=frozen,pool_init=blocks,rank=6]", "sst2", 1)
    assert type(plain.method) is LampConfig
    assert isinstance(lever.method, LampAblationConfig)
    assert (lever.method.residual, lever.method.pool_init, lever.method.rank, lever.method.pool) == \
        ("frozen", "blocks", 6, 4)
    with pytest.raises(ConfigError, match="apply to LAMP variants only"):
        with_levers(settings.run_config("pt", "sst2", 1), {"residual": "frozen"})
    with pytest.raises(ConfigError, match="residual: must be one of dropped, frozen"):
        CurveSettings(variants=("lamp_p4[residual=thawed]",), steps=10, eval_at=(10,)).run_config(
            "lamp_p4[residual=thawed]", "sst2", 1)
