"""The action text form: every kind parses back exactly, malformed texts are one-line ScheduleErrors.

.venv/bin/pytest tests/schedules/test_ir.py -q
"""

from __future__ import annotations

import pytest

from schedules.ir import Action, Kind, ScheduleError, format_action, parse_action

ROUND_TRIP = [
    # (text, action); why each case exists
    ("0F3", Action(0, Kind.F, 3)),  # PyTorch's notation, unchanged
    ("3I2", Action(3, Kind.I, 2)),  # input backward, PyTorch's I
    ("2W0", Action(2, Kind.W, 0)),  # weight backward
    ("1B11", Action(1, Kind.B, 11)),  # two-digit microbatch
    ("12F31", Action(12, Kind.F, 31)),  # two-digit stage (interleaved, P = 16)
    ("1SEND_F1", Action(1, Kind.SEND_F, 1)),  # PyTorch's comm notation
    ("2RECV_F1", Action(2, Kind.RECV_F, 1)),
    ("2SEND_B1", Action(2, Kind.SEND_B, 1)),
    ("1RECV_B1", Action(1, Kind.RECV_B, 1)),
    ("0OPT", Action(0, Kind.OPT)),  # optimizer step: no microbatch
    ("0OPT@s2v3", Action(0, Kind.OPT, None, 2, 3)),  # step and version written
    ("0OPT5@s1v6", Action(0, Kind.OPT, 5, 1, 6)),  # PipeDream: one update per microbatch
    ("0F3@s2v1", Action(0, Kind.F, 3, 2, 1)),  # step and version read
    ("0B3@v0", Action(0, Kind.B, 3, 0, 0)),  # version 0 is still written out
    ("5F0@s7", Action(5, Kind.F, 0, 7)),  # a step without a version (before the version pass)
    ("4SEND_G@s1>0", Action(4, Kind.SEND_G, None, 1, None, 0)),  # AMDP gradient to the owner
    ("0RECV_G@s1>4", Action(0, Kind.RECV_G, None, 1, None, 4)),
    ("0SEND_W@s1v2>4", Action(0, Kind.SEND_W, None, 1, 2, 4)),  # weights carry their version
    ("4RECV_W@s1v2>0", Action(4, Kind.RECV_W, None, 1, 2, 0)),
    ("7SEND_G3>3", Action(7, Kind.SEND_G, 3, 0, None, 3)),  # peer without step or version
    ("2OVERLAP_F_B5@s1", Action(2, Kind.OVERLAP_F_B, 5, 1)),  # a pair's marker names its forward
]


@pytest.mark.parametrize(("text", "action"), ROUND_TRIP)
def test_text_round_trip(text: str, action: Action) -> None:
    assert parse_action(text) == action
    assert format_action(action) == text
    assert str(action) == text
    assert parse_action(str(action)) == action


def test_every_kind_is_covered() -> None:
    assert {action.kind for _, action in ROUND_TRIP} == set(Kind)


def test_surrounding_whitespace_is_ignored() -> None:
    assert parse_action("  0F3\t") == Action(0, Kind.F, 3)


MALFORMED = [
    "",  # empty cell text is not an action
    "F3",  # no stage
    "0X3",  # unknown kind
    "0BW3",  # PyTorch's old full-backward code is the CSV reader's business, not the IR's
    "-1F0",  # negative stage
    "0F-1",  # negative microbatch
    "0F3@",  # '@' with nothing after it
    "0F3@s",  # step without a number
    "0F3@v1s2",  # version before step
    "0F3@x1",  # unknown suffix
    "0F3>",  # peer without a number
    "0F3 0F4",  # two actions
    "0f3",  # kinds are upper case
]


@pytest.mark.parametrize("text", MALFORMED)
def test_malformed_text_raises_one_line(text: str) -> None:
    with pytest.raises(ScheduleError) as error:
        parse_action(text)
    message = str(error.value)
    assert "\n" not in message
    assert repr(text.strip()) in message or repr(text) in message


def test_key_ignores_the_version() -> None:
    assert Action(0, Kind.F, 3, 1, 0).key == Action(0, Kind.F, 3, 1, 5).key
    assert Action(0, Kind.F, 3, 1).key != Action(0, Kind.F, 3, 2).key
