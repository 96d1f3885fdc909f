"""The `rig` fixture: one user's machine driving the real hook process against the Langfuse
stand-in (tests/test_delivery.py's Rig), shared by the delivery, recovery and proxy tests."""

import pytest
from test_delivery import Rig


@pytest.fixture
def rig(tmp_path, langfuse_standin):
    r = Rig(tmp_path, langfuse_standin)
    try:
        yield r
    finally:
        langfuse_standin.release()
        r.kill_senders()
