"""The paper's training setup, one switch each: warm-up as a ratio of the steps, the frozen model's dropout while
training (never while scoring) and selection on the reported set, on real offline models."""

import json
from pathlib import Path

import pytest
from torch import nn

from lamp_engine.config import RunConfig, TrainConfig
from lamp_engine.train import (
    Callbacks,
    Progress,
    build_model_and_method,
    evaluate_best,
    fit,
    initial_tokens,
    load_splits,
    train,
)

DATA = (Path(__file__).resolve().parents[2] / "shared" / "data").resolve()
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"benchmark data folder {DATA} not present")


def tiny(**overrides) -> RunConfig:
    values = {"model": "tiny-t5", "task": "sst2", "data_dir": str(DATA), "method": "pt", "length": 4, "steps": 10,
              "batch_size": 2, "max_eval_examples": 8, "eval_every": 0}
    return RunConfig.from_flat({**values, **overrides})


def test_warmup_ratio_is_a_fraction_of_the_steps_as_dpts_code():
    assert TrainConfig(steps=50, warmup_ratio=0.1).schedule(1000).warmup_steps == 5
    assert TrainConfig(epochs=3, batch_size=16, warmup_ratio=0.1).schedule(250).warmup_steps == 4  # int(0.1 * 48)
    assert TrainConfig(steps=50, warmup_steps=7).schedule(1000).warmup_steps == 7
    assert TrainConfig(steps=50).schedule(1000).warmup_steps == 0  # the default: no warm-up, as before


@pytest.mark.slow
def test_a_warmup_ratio_changes_the_learning_rate_of_the_first_steps(tmp_path):
    ramp = train(tiny(warmup_ratio=0.4), tmp_path / "ramp")
    steps = train(tiny(warmup_steps=4), tmp_path / "steps")
    flat = train(tiny(), tmp_path / "flat")
    lr = {name: [round(p["lr"], 6) for p in run.history["train"]] for name, run in
          (("ramp", ramp), ("steps", steps), ("flat", flat))}
    assert lr["ramp"] == lr["steps"] == [0.15, 0.225, 0.3, 0.3, 0.25, 0.2, 0.15, 0.1, 0.05, 0.0]
    assert lr["flat"] == [0.27, 0.24, 0.21, 0.18, 0.15, 0.12, 0.09, 0.06, 0.03, 0.0]  # linear decay from 0.3
    assert json.loads((tmp_path / "ramp" / "result.json").read_text())["config"]["train"]["warmup_ratio"] == 0.4


@pytest.mark.parametrize("switch", ["on", "off"])
def test_backbone_dropout_runs_while_training_as_switched_and_never_while_scoring(switch):
    """A forward hook on one of the frozen T5's dropout layers records its mode at every call; the callbacks mark
    where training steps end and evaluations begin."""
    config = tiny(backbone_dropout=switch, steps=2, eval_every=1)
    task, splits = load_splits(config)
    setup = build_model_and_method(config, splits, check_loaded=False)
    dropouts = [m for m in setup.backbone.model.modules() if isinstance(m, nn.Dropout)]
    assert dropouts and dropouts[0].p == 0.1  # T5's dropout_rate
    events: list[str] = []
    dropouts[0].register_forward_hook(lambda module, args, output: events.append(f"dropout {module.training}"))
    callbacks = Callbacks(on_step=lambda step, total, values, seconds: events.append("step"),
                          on_eval=lambda step, metrics: events.append(f"eval, model back to {model_mode()}"))

    def model_mode() -> bool:
        return setup.backbone.model.training

    progress = Progress(initial_tokens=initial_tokens(setup))
    fit(config, task, splits, setup, progress, callbacks)
    training = "dropout True" if switch == "on" else "dropout False"
    first_step, rest = events[:events.index("step")], events[events.index("step") + 1:]
    assert first_step and set(first_step) == {training}
    scoring = rest[:rest.index(f"eval, model back to {switch == 'on'}")]
    assert scoring and set(scoring) == {"dropout False"}  # the evaluation on the way: no dropout
    events.clear()
    evaluate_best(config, task, splits, setup, progress, Callbacks())
    assert events and set(events) == {"dropout False"}  # the last selection and the test scores: none either


@pytest.mark.slow
def test_select_on_validation_picks_the_best_evaluation_on_the_reported_set_and_marks_the_run(tmp_path):
    config = RunConfig.from_flat({"model": "minilm-l6", "task": "cb", "data_dir": str(DATA), "method": "pt",
                                  "length": 4, "steps": 40, "batch_size": 8, "eval_every": 10,
                                  "max_source_length": 128, "select_on": "validation", "seed": 3})
    result = train(config, tmp_path / "run")
    scores = [point["accuracy"] for point in result.history["eval"]]
    assert len(scores) == 4 and len(set(scores)) > 1  # evaluations that differ, so the pick is a real choice
    best = scores.index(max(scores))
    assert result.best_metrics["step"] == result.history["eval"][best]["step"]
    assert result.metrics["accuracy"] == max(scores)  # the reported set is the one selected on
    assert result.examples == {"train": 250, "select": 56, "test": 56}  # nothing held out of CB's training file
    assert "the reported set itself (--select-on validation, as the paper)" in result.split_policy["select"]
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["selected_on"] == "validation" == result.selected_on
    held = train(RunConfig.from_flat({**config.flat(), "select_on": "heldout", "steps": 1}), tmp_path / "held")
    assert held.selected_on == "heldout" and held.examples == {"train": 225, "select": 25, "test": 56}
