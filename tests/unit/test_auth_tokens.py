"""API tokens: what `TokenStore.issue` hands out works as a CLI argument and as a bearer."""

from __future__ import annotations

import pytest

import hotline.service  # noqa: F401 - registers every table on the shared metadata
from cti.auth import TOKEN_PREFIX, TokenStore
from cti.db import create_schema, make_engine, session_factory
from hotline.cli import build_parser


@pytest.fixture
def store() -> TokenStore:
    engine = make_engine("sqlite://")
    create_schema(engine)
    return TokenStore(session_factory(engine))


def test_issued_tokens_never_read_as_a_cli_option(store: TokenStore) -> None:
    """A bare url-safe token starts with "-" one time in 64 (it failed CI once, in
    `hotline dialplan publish --token -hGT...`): 400 tokens all parse as the value."""
    for _ in range(400):
        token = store.issue("qa-lead", "admin")
        assert token.startswith(TOKEN_PREFIX)
        args = build_parser().parse_args(["dialplan", "publish", "x.yaml", "--token", token])
        assert args.token == token
        assert store.check(token) is not None


def test_unknown_and_oversized_tokens_are_refused(store: TokenStore) -> None:
    token = store.issue("ops", "supervisor")
    assert store.check(token + "x") is None
    assert store.check(TOKEN_PREFIX + "A" * 300) is None
    assert store.check("") is None and store.check(None) is None
    assert store.revoke(token) and store.check(token) is None
