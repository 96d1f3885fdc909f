"""Fixtures for tests that write transcripts and run the hook's critical path in-process."""

import pytest
from transcript_factory import HookRunner, Transcript


@pytest.fixture
def session(tmp_path):
    """A 2.1.328-style session transcript, written line by line by the test."""
    return Transcript(str(tmp_path / "projects" / "-home-dev-proj" / "5b469540-beb0-4db7-b5e1-5bf71f36cd69.jsonl"))


@pytest.fixture
def runner(tmp_path):
    """The hook's critical path against a private state folder (no sender is started)."""
    return HookRunner(str(tmp_path / "state"))
