"""Piece-rate statements: every rule, and the points computed by hand."""

from __future__ import annotations

import pytest

from cti.reports.facts import Callback, QueueAttempt, callbacks
from cti.reports.piecerate import CompositeInputs, statement
from cti.reports.rules import PieceRateRules
from cti.reports.sources import CdrRow

RULES = PieceRateRules(min_talk_seconds=30, base_points=100, points_per_call=2, points_per_callback=1.5,
                       survey_weight=10, praise_points=5, qa_weight=0.2)


def answered(n: int, talk: float | None, agent: str = "1001", **kw: object) -> QueueAttempt:
    return QueueAttempt(callid=f"c{n}", queue="repair", entered_at=1_000 + n, caller_num=f"1380000000{n}",
                        outcome="answered", wait_seconds=3, agent=agent, talk_seconds=talk, **kw)  # type: ignore[arg-type]


ATTEMPTS = [
    answered(1, 120),                                      # counted
    answered(2, 29.9),                                     # too short
    answered(3, 30),                                       # counted (exactly the minimum)
    answered(4, 300, is_test=True),                        # test call
    answered(5, 200, internal="transferred in by agent 1002"),  # internal transfer
    answered(6, None),                                     # still connected
    answered(7, 500, agent="1002"),                        # someone else's call
    QueueAttempt(callid="c8", queue="repair", entered_at=1_008, outcome="abandoned", wait_seconds=40),
]
BACKS = [
    Callback("b1", "1001", "13900000001", 2_000, answered=True, talk_seconds=45),   # counted
    Callback("b2", "1001", "13900000002", 2_001, answered=False, talk_seconds=0),   # not answered
    Callback("b3", "1001", "13900000003", 2_002, answered=True, talk_seconds=10),   # too short
    Callback("b4", "1002", "13900000004", 2_003, answered=True, talk_seconds=99),   # someone else's
]


def test_statement_lists_every_call_with_its_reason() -> None:
    st = statement("1001", "2026-03", ATTEMPTS, BACKS, CompositeInputs(), RULES)
    got = [(line.linkedid, line.counted, line.reason) for line in st.lines]
    assert got == [
        ("c1", True, "answered from queue repair, talk 120 s"),
        ("c2", False, "talk 29.9 s < minimum 30 s"),
        ("c3", True, "answered from queue repair, talk 30 s"),
        ("c4", False, "test call"),
        ("c5", False, "internal: transferred in by agent 1002"),
        ("c6", False, "still connected (no talk time logged yet)"),
        ("b1", True, "completed callback, talk 45 s"),
        ("b2", False, "callback not answered"),
        ("b3", False, "talk 10 s < minimum 30 s"),
    ]
    # 2 calls x 2 points + 1 callback x 1.5 = 5.5
    assert (st.counted_calls, st.counted_callbacks, st.piece_points) == (2, 1, 5.5)
    assert (st.composite_points, st.total_points) == (0.0, 105.5)


def test_composite_points_show_their_inputs() -> None:
    st = statement("1001", "2026-03", ATTEMPTS, BACKS,
                   CompositeInputs(survey_mean_score=4.5, survey_responses=6, praise=3, qa_score=85), RULES)
    # 10 x 4.5 + 5 x 3 + 0.2 x 85 = 45 + 15 + 17 = 77
    assert st.composite_parts == {"survey": 45.0, "praise": 15.0, "qa": 17.0}
    assert st.composite_points == 77.0
    assert st.total_points == 100 + 5.5 + 77
    body = st.to_dict()
    assert body["composite"]["survey_mean_score"] == 4.5 and body["composite"]["praise"] == 3
    assert body["formula"] == "累计积分 = 基准积分 + 计件积分 + 综合积分"
    assert body["not_counted"] == 6 and len(body["lines"]) == 9


def test_changed_minimum_recounts() -> None:
    loose = PieceRateRules(min_talk_seconds=0, points_per_call=1, points_per_callback=1)
    st = statement("1001", "2026-03", ATTEMPTS, BACKS, CompositeInputs(), loose)
    # c1 c2 c3 + b1 b3 (test, internal, connected, unanswered still out)
    assert (st.counted_calls, st.counted_callbacks, st.piece_points) == (3, 2, 5.0)


def _cdr(uid: str, channel: str, dst: str, context: str, app: str, disposition: str, billsec: float) -> CdrRow:
    return CdrRow(uid, uid, 0, channel, "PJSIP/carrier-1", "1001", dst, context, "", app, "", 10.0,
                  11.0 if disposition == "ANSWERED" else None, 11.0 + billsec, billsec + 1, billsec, disposition, "",
                  "")


@pytest.mark.parametrize(("row", "expected"), [
    (_cdr("u1", "PJSIP/1001-00000001", "13900000001", "from-phones", "Dial", "ANSWERED", 40), [("1001", True)]),
    (_cdr("u2", "PJSIP/1001-00000002", "13900000001", "from-phones", "Dial", "NO ANSWER", 0), [("1001", False)]),
    (_cdr("u3", "PJSIP/1001-00000003", "1002", "from-phones", "Dial", "ANSWERED", 40), []),       # agent to agent
    (_cdr("u4", "PJSIP/1001-00000004", "s", "hotline", "AGI", "ANSWERED", 40), []),              # called the hotline
    (_cdr("u5", "PJSIP/carrier-00000005", "4000", "from-trunk", "Dial", "ANSWERED", 40), []),   # a customer
])
def test_callbacks_from_cdr(row: CdrRow, expected: list[tuple[str, bool]]) -> None:
    assert [(c.agent, c.answered) for c in callbacks([row], ["1001", "1002"])] == expected
