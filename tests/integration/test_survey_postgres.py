"""The survey store's tests (tests/unit/test_survey_store.py) again on a real PostgreSQL server:
row locks (FOR UPDATE / SKIP LOCKED), timestamptz and the constraints behave the same."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from cti.db import Base, create_schema, make_engine, session_factory
from ivr.survey import models
from tests.support.postgres import postgres_server
from tests.unit.test_survey_store import (  # noqa: F401 - fixtures and tests collected here as well
    clock,
    store,
    test_answered_call_settles_when_both_hangup_and_survey_end_are_known,
    test_answered_without_any_input_is_retried_with_its_delay,
    test_attempt_row_is_written_before_the_call_and_retries_follow_the_rules,
    test_bad_csv_imports_nothing,
    test_call_ended_trigger_samples_answered_calls_only,
    test_flow_hangup_keeps_every_answer_already_given,
    test_flow_silence_ends_politely_as_no_input,
    test_flow_stores_answers_branches_and_records,
    test_one_survey_per_customer_per_period,
    test_outside_the_window_waits_for_the_opening,
    test_reconcile_after_a_crash_never_redials_blindly,
    test_suppressed_numbers_are_never_claimed,
)

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def pg_engine() -> Iterator[Engine]:
    _ = models.SurveyJob
    with postgres_server() as url:
        engine = make_engine(url)
        yield engine
        engine.dispose()


@pytest.fixture
def sessions(pg_engine: Engine) -> Iterator[sessionmaker[Session]]:
    create_schema(pg_engine)
    yield session_factory(pg_engine)
    Base.metadata.drop_all(pg_engine)
