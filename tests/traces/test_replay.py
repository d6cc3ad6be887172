"""The recorded runs replay: today's schedules, simulator and calibration still say what they said.

.venv/bin/pytest tests/traces/test_replay.py -q

Each folder of traces/recorded/ is a real `pipesim run` on this project's CPU machine with its fitted
costs and calibrated prediction (traces/replay.py). A failure here means a change moved the action
order, the simulator's output for the recorded costs, or broke a recording: if the change is intended,
`pipesim replay traces/recorded --update` re-records the predictions (never the measurements).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipesim.cli import main
from traces.replay import COMMAND, read_recording, recordings_under

RECORDED = Path(__file__).resolve().parents[2] / "traces" / "recorded"
RECORDINGS = recordings_under([str(RECORDED)])


def test_there_are_recordings_of_every_schedule_the_goal_names() -> None:
    names = {read_recording(path).measured.schedule.name for path in RECORDINGS}
    assert {"gpipe", "1f1b", "pipedream", "2bw"} <= names
    total = sum(f.stat().st_size for path in RECORDINGS for f in path.iterdir())
    assert total < 2 * 2**20  # all together under 2 MB


@pytest.mark.parametrize("path", RECORDINGS, ids=[path.name for path in RECORDINGS])
def test_every_recording_replays(capsys: pytest.CaptureFixture[str], path: Path) -> None:
    recording = read_recording(path)
    assert recording.measured.source == "measured" and recording.measured.meta["completed"] is True
    assert (
        (path / COMMAND).read_text().startswith(f"pipesim run --schedule {recording.measured.schedule.name}")
    )
    code = main(["replay", str(path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"{path}: ok" in out
