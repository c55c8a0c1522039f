"""`longrope.train.saved` with what a killed run or a user leaves behind: a half-written last log line, stray
names in checkpoints/, a damaged checkpoint state."""

from __future__ import annotations

import json

import pytest

from longrope.errors import LongRopeError
from longrope.train import saved


def test_a_half_written_last_log_line_is_dropped_with_a_note(tmp_path, capsys):
    log = tmp_path / saved.LOG_FILE
    for step in (1, 2, 3):
        saved.append_log(log, {"step": step, "loss": 1.0 / step})
    log.write_text(log.read_text() + '{"step": 4, "lo')  # the fine-tune was killed while writing step 4
    saved.trim_log(log, 3)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3]
    err = capsys.readouterr().err
    assert err.startswith(f"note: {log}: dropped 1 damaged line") and len(err.strip().splitlines()) == 1
    saved.append_log(log, {"step": 4})  # the resumed run appends whole lines again
    assert log.read_text().endswith('{"step": 3, "loss": 0.3333333333333333}\n{"step": 4}\n')


def test_a_whole_log_is_trimmed_without_a_note(tmp_path, capsys):
    log = tmp_path / saved.LOG_FILE
    for step in (1, 2, 3):
        saved.append_log(log, {"step": step})
    saved.trim_log(log, 2)
    assert log.read_text() == '{"step": 1}\n{"step": 2}\n' and capsys.readouterr().err == ""


def test_stray_names_in_checkpoints_are_not_checkpoints(tmp_path):
    root = tmp_path / saved.CHECKPOINTS_DIR
    for name in ("step-000002", "step-000004", "step-000004.bak", "step-latest"):
        (root / name).mkdir(parents=True)
        (root / name / saved.STATE_FILE).write_text(json.dumps({"step": 4}))
    (root / "step-000006.bak").write_text("a stray file")
    assert [p.name for p in saved.checkpoints(tmp_path)] == ["step-000002", "step-000004"]
    assert saved.latest_checkpoint(tmp_path) == root / "step-000004"


@pytest.mark.parametrize("text", ['{"step": 4', "[1, 2]", "\xff"])
def test_a_damaged_checkpoint_state_is_one_clear_error(tmp_path, text):
    checkpoint = tmp_path / "step-000004"
    checkpoint.mkdir()
    (checkpoint / saved.STATE_FILE).write_bytes(text.encode("latin-1"))
    with pytest.raises(LongRopeError, match="step-000004 is damaged .*delete that directory"):
        saved.checkpoint_state(checkpoint)
