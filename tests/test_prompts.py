"""The soft-prompt methods: parameter counts, LAMP's equations, initialisation and gradient flow."""

import pytest
import torch
import torch.nn.functional as F

from lamp_engine.backbones import load_backbone
from lamp_engine.config import TrainConfig
from lamp_engine.methods import METHODS, LampConfig, MethodFamily, method_config
from lamp_engine.prompts import build_prompt
from lamp_engine.prompts.lamp import Lamp

PROMPTS = [name for name, kind in METHODS.items() if kind.family is MethodFamily.SOFT_PROMPT]


def vocab_rows(l: int, d: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(l, d, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("method", PROMPTS)
@pytest.mark.parametrize(("l", "r", "d"), [(100, 8, 64), (20, 4, 48), (40, 16, 32)])
def test_module_parameter_count_equals_formula(method, l, r, d):
    settings = {"length": l, "rank": r, "pool": 4, "bottleneck": 16, "dept_length": l // 2}
    config = method_config(method, **{k: v for k, v in settings.items() if k in METHODS[method].field_names()})
    prompt = build_prompt(config, vocab_rows(l, d), max_source_length=30)
    assert prompt.num_trainable() == config.trainable_params(d, max_source_length=30)
    assert prompt().shape == (config.prompt_tokens, d)


def test_lamp_parameter_count_is_the_papers_for_t5_small():
    prompt = build_prompt(LampConfig(length=100, rank=8), vocab_rows(100, 512), 256)
    assert prompt.num_trainable() == 4904


@pytest.mark.parametrize("pool", [1, 2, 4, 5])
def test_lamp_prompt_is_pooled_u_q_squared_v_plus_the_frozen_remainder(pool):
    prompt = build_prompt(LampConfig(length=20, rank=6, pool=pool), vocab_rows(20, 32), 64)
    assert not prompt.R.requires_grad and prompt.num_trainable() == 20 * 6 + 6 + 6 * 32
    with torch.no_grad():
        prompt.Q.mul_(1.7)  # any Q, not only the initial one
        full = prompt.U @ torch.diag(prompt.Q**2) @ prompt.V.T + prompt.R
        expected = F.avg_pool1d(full.T.unsqueeze(0), pool).squeeze(0).T
        expected_by_hand = full.reshape(20 // pool, pool, 32).mean(dim=1)
        assert prompt().shape == (20 // pool, 32)
        torch.testing.assert_close(prompt(), expected)
        torch.testing.assert_close(prompt(), expected_by_hand)


@pytest.mark.parametrize("q_init", ["balanced", "paper"])
def test_the_first_prompt_is_p_pooled_and_r_is_p_beyond_the_trained_product(q_init):
    P = vocab_rows(30, 40)
    U, S, Vh = torch.linalg.svd(P, full_matrices=False)
    Q = S[:5] if q_init == "paper" else S[:5].sqrt()
    prompt = build_prompt(LampConfig(length=30, rank=5, pool=3, q_init=q_init), P, 64)
    with torch.no_grad():
        torch.testing.assert_close(prompt.Q, Q)
        torch.testing.assert_close(prompt.compressed(), U[:, :5] @ torch.diag(Q**2) @ Vh[:5], atol=1e-3, rtol=1e-4)
        torch.testing.assert_close(prompt.R, P - prompt.compressed(), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(prompt(), P.reshape(10, 3, 40).mean(dim=1), atol=1e-4, rtol=1e-4)


def test_balanced_init_trains_from_the_rank_r_truncation_of_p():
    P = vocab_rows(30, 40)
    U, S, Vh = torch.linalg.svd(P, full_matrices=False)
    prompt = build_prompt(LampConfig(length=30, rank=5, pool=1), P, 64)
    with torch.no_grad():
        torch.testing.assert_close(prompt.compressed(), U[:, :5] @ torch.diag(S[:5]) @ Vh[:5], atol=1e-4, rtol=1e-4)
        assert prompt.R.norm() > 0.5 * P.norm()  # 5 of 30 directions: most of P is the frozen remainder


def test_full_rank_lamp_has_no_remainder():
    P = vocab_rows(10, 16)
    prompt = build_prompt(LampConfig(length=10, rank=10, pool=1), P, 64)
    with torch.no_grad():
        assert prompt.R.abs().max() < 1e-4
        torch.testing.assert_close(prompt.compressed(), P, atol=1e-4, rtol=1e-4)


def test_attention_pooling_rows_are_convex_combinations_of_c_plus_r():
    prompt = build_prompt(LampConfig(length=12, rank=3, pool=3, attention_pool=True),
                          vocab_rows(12, 16), 64)
    assert prompt.num_trainable() == 12 * 3 + 3 + 3 * 16 + 16 * 4
    with torch.no_grad():
        C = (prompt.U * prompt.Q) @ (prompt.Q[:, None] * prompt.V.T) + prompt.R
        weights = torch.softmax(C @ prompt.W_sa, dim=0)
        torch.testing.assert_close(weights.sum(dim=0), torch.ones(4))
        torch.testing.assert_close(prompt(), weights.T @ C)
    assert prompt().shape == (4, 16)


def test_lamp_starts_from_l_over_p_vocabulary_rows_each_repeated_p_times():
    backbone = load_backbone("tiny-t5", TrainConfig(device="cpu"))
    config = LampConfig(length=12, rank=2, pool=4)
    P, rule = Lamp.initial_prompt(config, backbone, torch.Generator().manual_seed(0))
    vocabulary = backbone.model.get_input_embeddings().weight.detach().float()
    distinct = P[::4]
    assert P.shape == (12, backbone.hidden_size) and torch.equal(P, distinct.repeat_interleave(4, dim=0))
    assert all((vocabulary == row).all(dim=1).any() for row in distinct)  # each a token's embedding
    assert len({tuple(row.tolist()) for row in distinct}) == 3
    assert rule.endswith("; 3 rows each repeated 4 times")
    with torch.no_grad():  # pooling gives the rows back whole: the model first reads three real tokens
        torch.testing.assert_close(Lamp(config, P, 64)(), distinct, atol=1e-4, rtol=1e-4)


def test_a_state_saved_before_r_existed_loads_with_r_zero_and_feeds_what_it_fed():
    config = LampConfig(length=8, rank=2, pool=2)
    trained = build_prompt(config, vocab_rows(8, 16, seed=1), 64)
    earlier = {name: value for name, value in trained.trainable_state().items() if name != "R"}
    restored = build_prompt(config, vocab_rows(8, 16, seed=2), 64)
    restored.load_trainable_state(earlier)
    with torch.no_grad():
        assert torch.equal(restored.R, torch.zeros(8, 16))
        torch.testing.assert_close(restored(), F.avg_pool1d(trained.compressed().T.unsqueeze(0), 2).squeeze(0).T)
    restored.load_trainable_state(trained.trainable_state())  # today's state carries its R
    assert torch.equal(restored.R, trained.R)


def test_dpt_initialises_uniformly_in_half_interval_with_its_bottleneck():
    prompt = build_prompt(method_config("dpt", length=50), vocab_rows(50, 32), 64)
    assert prompt.A.shape == (50, 10) and prompt.B.shape == (10, 32)  # b = 10, DPT's default
    values = torch.cat([prompt.A.flatten(), prompt.B.flatten()])
    assert values.min() >= -0.5 and values.max() <= 0.5 and values.std() > 0.2


def test_dept_updates_only_the_first_s_input_positions_scaled_as_its_code():
    prompt = build_prompt(method_config("dept", length=10, rank=2, dept_length=4), vocab_rows(10, 8), 5)
    assert torch.equal(prompt.B, torch.zeros(2, 8)) and prompt.A.abs().max() <= 1 / 2 ** 0.5  # U(+-1/sqrt(r))
    with torch.no_grad():
        prompt.B.fill_(1.0)
        embeds = torch.zeros(2, 7, 8)
        adjusted = prompt.adjust_input_embeds(embeds)
        torch.testing.assert_close(adjusted[0, :5], 8 / 2 ** 0.5 * (prompt.A @ prompt.B))  # alpha 8 / sqrt(r)
        assert torch.equal(adjusted[:, 5:], embeds[:, 5:])
    assert prompt().shape == (4, 8)


def test_dept_trains_its_pair_at_its_own_learning_rate():
    prompt = build_prompt(method_config("dept", length=10, rank=2, dept_length=4, pair_lr=3e-4), vocab_rows(10, 8), 5)
    optimizer = torch.optim.AdamW(prompt.param_groups(0.3))
    assert [(group["lr"], [p.shape for p in group["params"]]) for group in optimizer.param_groups] == [
        (0.3, [(4, 8)]), (3e-4, [(5, 2), (2, 8)])]


@pytest.mark.parametrize(("d", "pt", "dpt", "dept", "residual", "lamp"), [
    (512, 51_200, 6_120, 50_688, 462_736, 4_904),  # T5-small: the paper's 51K, 6K, 51K, 462K, 5K
    (768, 76_800, 8_680, 76_800, 693_904, 6_952),  # T5-base: 77K, 9K, 77K, 693K, 7K
    (1024, 102_400, 11_240, 102_400, 925_072, 9_000),  # T5-large: 102K, 11K, 102K, 925K, 9K
])
def test_parameter_counts_at_l_100_are_the_papers_table_1(d, pt, dpt, dept, residual, lamp):
    counts = {name: build_prompt(METHODS[name](), vocab_rows(100, d), max_source_length=256).num_trainable()
              for name in PROMPTS}
    assert counts == {"pt": pt, "dpt": dpt, "dept": dept, "residual": residual, "lamp": lamp}
    assert all(counts[name] == METHODS[name]().trainable_params(d, 256) for name in PROMPTS)
    assert METHODS["dept"]().resolved_rank(768, 256) == 30  # DePT's released T5-base checkpoints: m 60, r 30


def test_residual_prompt_adds_the_mlp_output_to_p():
    prompt = build_prompt(method_config("residual", length=6, bottleneck=5), vocab_rows(6, 8), 64)
    with torch.no_grad():
        torch.testing.assert_close(prompt(), prompt.P + prompt.mlp(prompt.P))
