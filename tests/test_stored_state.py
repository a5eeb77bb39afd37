"""A stored trainer state is read with torch.load(weights_only=True): what training saves loads that way, and a
pickle that would run code is refused (issue 30)."""

from pathlib import Path

import pytest
import torch

from lamp_common.result import Outcome
from lamp_engine.errors import TrainingStateError
from lamp_engine.train import Callbacks, train
from tests.test_train import tiny


class Payload:
    """Unpickling it writes a file: what a hostile trainer_state.pt would do on every worker that resumes it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.write_text, (self.marker, "ran")


@pytest.mark.slow
def test_a_real_saved_state_with_evaluations_loads_weights_only_and_resumes(tmp_path):
    steps_seen = []
    callbacks = Callbacks(on_step=lambda step, total, values, seconds: steps_seen.append(step),
                          should_stop=lambda: len(steps_seen) >= 2)
    stopped = train(tiny(steps=4, eval_every=2), tmp_path / "run", callbacks)
    assert stopped.status is Outcome.STOPPED and stopped.steps == 2
    saved = torch.load(tmp_path / "run" / "trainer_state.pt", weights_only=True)
    assert saved["step"] == 2 and saved["best_metrics"]["step"] == 2 and saved["history"]["eval"][0]["step"] == 2
    resumed = train(tiny(steps=4, eval_every=2), tmp_path / "run", resume=True)
    assert resumed.status is Outcome.COMPLETED and [p["step"] for p in resumed.history["train"]] == [1, 2, 3, 4]


def test_a_trainer_state_that_would_run_code_is_refused(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    marker = tmp_path / "owned"
    torch.save({"step": 2, "history": Payload(marker)}, folder / "trainer_state.pt")
    with pytest.raises(TrainingStateError) as refused:
        train(tiny(steps=4, eval_every=0), folder, resume=True)
    message = str(refused.value)
    assert message.startswith("trainer_state.pt: refused, it holds more than tensors and plain values (")
    assert message.endswith("retry from scratch or delete the checkpoint") and "\n" not in message
    assert not marker.exists()
