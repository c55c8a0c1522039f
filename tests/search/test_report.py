"""`longrope.search.report.EvaluationLog` on resume: what a killed run left past the state is cut, with a note."""

from __future__ import annotations

import json

from longrope.search.report import EvaluationLog


def _rows(n: int) -> bytes:
    return b"".join((json.dumps({"order": i, "fitness": 1.0}) + "\n").encode() for i in range(n))


def test_a_half_written_last_line_past_the_state_is_cut_with_a_note(tmp_path):
    path = tmp_path / "evaluations.jsonl"
    path.write_bytes(_rows(3) + b'{"order": 3, "fitn')  # killed while writing a batch the state never counted
    log = EvaluationLog(path, keep_bytes=len(_rows(3)), expected_rows=3)
    assert path.read_bytes() == _rows(3)
    assert log.repaired is not None and "unsaved batch" in log.repaired and str(path) in log.repaired
    log.append([{"order": 3}])
    assert [json.loads(line)["order"] for line in path.read_text().splitlines()] == [0, 1, 2, 3]


def test_a_log_that_agrees_with_the_state_needs_no_note(tmp_path):
    path = tmp_path / "evaluations.jsonl"
    path.write_bytes(_rows(3))
    assert EvaluationLog(path, keep_bytes=len(_rows(3)), expected_rows=3).repaired is None
    assert path.read_bytes() == _rows(3)
