"""Config validation, the method registry and the paper's trainable-parameter formulas (no torch needed)."""

import dataclasses

import pytest

from lamp_engine.aliases import ModelShape
from lamp_engine.config import ConfigError, RunConfig, TrainConfig, expand_grid, flat_fields
from lamp_engine.methods import METHODS, LampConfig, MethodFamily, PromptTuningConfig, method_config


@pytest.mark.parametrize(("d", "lamp", "pt"), [(512, 4904, 51200), (768, 6952, 76800), (1024, 9000, 102400),
                                               (4096, 33576, 409600)])
def test_paper_parameter_counts(d, lamp, pt):
    assert LampConfig(length=100, rank=8).trainable_params(d) == lamp
    assert PromptTuningConfig(length=100).trainable_params(d) == pt


@pytest.mark.parametrize(("name", "settings", "field"), [
    ("prefix", {}, "method"),
    ("lamp", {"length": 0}, "length"),
    ("lamp", {"rank": -1}, "rank"),
    ("lamp", {"length": 100, "pool": 3}, "pool"),
    ("lamp", {"q_init": "random"}, "q_init"),
    ("pt", {"rank": 4}, "rank"),
])
def test_invalid_method_config_names_the_field(name, settings, field):
    with pytest.raises(ConfigError, match=rf"^{field}: "):
        method_config(name, **settings)


def test_rank_above_min_length_hidden_is_rejected():
    with pytest.raises(ConfigError, match=r"^rank: rank 40 exceeds min\(length 100, hidden size 32\)"):
        LampConfig(length=100, rank=40).check_model(ModelShape(32))
    LampConfig(length=20, rank=20, pool=1).check_model(ModelShape(512))


def test_non_positive_learning_rate_is_rejected():
    with pytest.raises(ConfigError, match="^lr: must be positive"):
        TrainConfig(lr=0.0)


def test_unknown_dtype_is_rejected():
    with pytest.raises(ConfigError, match="^dtype: must be one of auto, fp32, bf16, got 'fp16'"):
        TrainConfig(dtype="fp16")


def test_flat_round_trip_and_unknown_field():
    config = RunConfig.from_flat({"model": "tiny-t5", "method": "pt", "lr": 0.1, "k_shot": 8})
    assert config.method == PromptTuningConfig() and config.train.lr == 0.1 and config.data.k_shot == 8
    assert RunConfig.from_dict(config.to_dict()) == config
    assert RunConfig.from_flat(config.flat()) == config
    with pytest.raises(ConfigError, match="^colour: unknown"):
        RunConfig.from_flat({"colour": "red"})


def test_prompt_tokens_after_pooling():
    assert LampConfig(length=100, pool=4).prompt_tokens == 25
    assert PromptTuningConfig(length=100).prompt_tokens == 100


def test_rank_above_length_is_rejected_without_a_model():
    with pytest.raises(ConfigError, match="^rank: rank 12 exceeds the prompt length 10"):
        LampConfig(length=10, rank=12)


def test_every_method_entry_states_its_facts_and_validates_its_defaults():
    from lamp_engine.aliases import ALIASES

    for name, kind in METHODS.items():
        assert kind.name == name and kind.title and isinstance(kind.family, MethodFamily)
        default = kind()
        assert (default.prompt_tokens > 0) == (kind.family is MethodFamily.SOFT_PROMPT)
        assert default.trainable_params(ALIASES["smollm2-135m"].shape) > 0
        assert set(default.default_lrs) == {"seq2seq", "causal", "encoder"}
        assert all(f.metadata.get("help") for f in dataclasses.fields(kind))


def test_a_setting_of_another_method_is_refused_by_name():
    with pytest.raises(ConfigError, match="^bottleneck: applies to dpt, residual only, not to lamp"):
        RunConfig.from_flat({"method": "lamp", "bottleneck": 10})
    with pytest.raises(ConfigError, match="^pool: applies to lamp only, not to pt"):
        RunConfig.from_flat({"method": "pt", "pool": 4})


def test_a_custom_task_field_is_refused_for_a_benchmark_task():
    with pytest.raises(ConfigError, match=r"^verbalizers: applies to the custom task only \(--task custom"):
        RunConfig.from_flat({"task": "sst2", "verbalizers": "0=a,1=b"})
    config = RunConfig.from_flat({"task": "custom", "train_file": "x.csv", "verbalizers": "0=a,1=b"})
    assert config.data.verbalizers == "0=a,1=b"


def test_a_sweep_over_methods_gives_each_run_its_own_settings():
    configs = expand_grid({"model": "tiny-t5", "pool": 2}, {"method": ["lamp", "pt"], "seed": [1, 2]})
    assert [(c.method.name, c.train.seed) for c in configs] == [("lamp", 1), ("lamp", 2), ("pt", 1), ("pt", 2)]
    assert configs[0].method.pool == 2 and configs[2].method == PromptTuningConfig()
    with pytest.raises(ConfigError, match="^bottleneck: applies to dpt, residual only, not to lamp, pt"):
        expand_grid({"bottleneck": 8}, {"method": ["lamp", "pt"]})


def test_older_run_configs_with_every_methods_fields_still_load():
    legacy = {"model": "tiny-t5", "task": "sst2", "prompt": {"method": "pt", "length": 20, "rank": 8, "pool": 4,
                                                             "q_init": "balanced", "attention_pool": False,
                                                             "bottleneck": 400, "dept_length": 60}}
    assert RunConfig.from_dict(legacy).method == PromptTuningConfig(length=20)


def test_flat_fields_name_each_methods_default():
    fields = flat_fields()
    assert fields["rank"].kind is int and fields["attention_pool"].kind is bool and fields["lr"].kind is float
    assert "lamp: rank r of the truncated SVD (at most 4,096) (default: 8)" in fields["rank"].help
    assert fields["verbalizers"].section == "data" and fields["pool"].section == "method"
