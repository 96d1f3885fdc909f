"""Pytest fixture: a started Langfuse stand-in with fresh random keys for each test.

Fresh keys matter: the Langfuse SDK keeps one client per public key per process,
so a second client with a reused key would silently talk to the first one's server.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from langfuse_standin import LangfuseStandin


@pytest.fixture
def langfuse_standin() -> Iterator[LangfuseStandin]:
    token = secrets.token_hex(8)
    standin = LangfuseStandin(f"pk-lf-test-{token}", f"sk-lf-test-{token}")
    standin.start()
    try:
        yield standin
    finally:
        standin.stop()
