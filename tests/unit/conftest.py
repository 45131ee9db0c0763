"""Fixtures shared by the unit tests: an in-memory SQLite service database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

import hotline.service  # noqa: F401 - registers every table on the shared metadata
from cti.ami.client import AMIClient
from cti.db import create_schema, make_engine, session_factory
from tests.support.fake_ami import FakeAMI, ready_client


@pytest.fixture
def engine() -> Iterator[Engine]:
    """The whole schema in a private in-memory database (one connection, any thread)."""
    eng = make_engine("sqlite://")
    create_schema(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return session_factory(engine)


@pytest.fixture
async def server() -> AsyncIterator[FakeAMI]:
    """A scripted AMI peer on 127.0.0.1 (tests/support/fake_ami.py)."""
    async with FakeAMI() as fake:
        yield fake


@pytest.fixture
async def ami(server: FakeAMI) -> AsyncIterator[AMIClient]:
    """A logged-in AMIClient on `server`."""
    async with ready_client(server) as client:
        yield client
