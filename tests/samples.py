"""Where the real sample transcripts are: ../shared/transcripts beside the checkout (as on the
developers' machines and in CI), or CC_LANGFUSE_SAMPLES. Tests that need them skip when absent."""

import os
import pathlib

_REPO = pathlib.Path(__file__).resolve().parent.parent
SAMPLES = pathlib.Path(os.environ.get("CC_LANGFUSE_SAMPLES") or _REPO.parent / "shared" / "transcripts")
if not SAMPLES.is_dir() and pathlib.Path("/work/shared/transcripts").is_dir():
    SAMPLES = pathlib.Path("/work/shared/transcripts")
