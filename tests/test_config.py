"""Config validation and the paper's trainable-parameter formulas (no torch needed)."""

import pytest

from lamp_engine.config import ConfigError, PromptConfig, RunConfig, TrainConfig


@pytest.mark.parametrize(("d", "lamp", "pt"), [(512, 4904, 51200), (768, 6952, 76800), (1024, 9000, 102400),
                                               (4096, 33576, 409600)])
def test_paper_parameter_counts(d, lamp, pt):
    assert PromptConfig(method="lamp", length=100, rank=8).trainable_params(d) == lamp
    assert PromptConfig(method="pt", length=100).trainable_params(d) == pt


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"method": "lora"}, "method"),
    ({"length": 0}, "length"),
    ({"rank": -1}, "rank"),
    ({"length": 100, "pool": 3}, "pool"),
    ({"q_init": "random"}, "q_init"),
])
def test_invalid_prompt_config_names_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=rf"^{field}: "):
        PromptConfig(**kwargs)


def test_rank_above_min_length_hidden_is_rejected():
    with pytest.raises(ConfigError, match=r"^rank: rank 40 exceeds min\(length 100, hidden size 32\)"):
        PromptConfig(method="lamp", length=100, rank=40).check_hidden_size(32)
    PromptConfig(method="lamp", length=20, rank=20).check_hidden_size(512)


def test_non_positive_learning_rate_is_rejected():
    with pytest.raises(ConfigError, match="^lr: must be positive"):
        TrainConfig(lr=0.0)


def test_unknown_dtype_is_rejected():
    with pytest.raises(ConfigError, match="^dtype: must be one of auto, fp32, bf16, got 'fp16'"):
        TrainConfig(dtype="fp16")


def test_flat_round_trip_and_unknown_field():
    config = RunConfig.from_flat({"model": "tiny-t5", "method": "pt", "lr": 0.1, "k_shot": 8})
    assert config.prompt.method == "pt" and config.train.lr == 0.1 and config.data.k_shot == 8
    assert RunConfig.from_dict(config.to_dict()) == config
    assert RunConfig.from_flat(config.flat()) == config
    with pytest.raises(ConfigError, match="^colour: unknown"):
        RunConfig.from_flat({"colour": "red"})


def test_prompt_tokens_after_pooling():
    assert PromptConfig(method="lamp", length=100, pool=4).prompt_tokens == 25
    assert PromptConfig(method="pt", length=100, pool=4).prompt_tokens == 100


def test_rank_above_length_is_rejected_without_a_model():
    with pytest.raises(ConfigError, match="^rank: rank 12 exceeds the prompt length 10"):
        PromptConfig(method="lamp", length=10, rank=12)
