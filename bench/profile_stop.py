"""The hook's own work on one Stop, in-process and warm: no interpreter start-up, no imports.

Takes a work folder kept by `bench_hook.py --keep` and replays the session's last Stop on the
state snapshot the benchmark took before it (`replay-<phase>.pristine`), a few times, then
prints a cProfile of one run. Shows how much of Claude Code's `durationMs` is the hook's work.

    .venv/bin/python bench/bench_hook.py --turns 4 --sizes 50 --keep --no-baseline --diagnose never
    .venv/bin/python bench/profile_stop.py /tmp/bench-hook-XXXX --phase 50MB
"""

from __future__ import annotations

import argparse
import cProfile
import glob
import json
import os
import pathlib
import pstats
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "hooks"))
import langfuse_hook as h  # noqa: E402


def last_stop_event(transcript: str) -> dict:
    rows = [json.loads(line) for line in open(transcript, "rb") if line.strip()]
    prompts = [
        r for r in rows if r.get("type") == "user" and r.get("promptId") and isinstance((r.get("message") or {}).get("content"), str)
    ]
    texts = [b.get("text") for r in rows if r.get("type") == "assistant" for b in r["message"]["content"] if b.get("type") == "text"]
    last = prompts[-1]
    return {
        "session_id": last["sessionId"],
        "transcript_path": transcript,
        "cwd": last.get("cwd", ""),
        "prompt_id": last["promptId"],
        "hook_event_name": "Stop",
        "last_assistant_message": texts[-1],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("work_dir", help="a folder kept by bench_hook.py --keep")
    ap.add_argument("--phase", default="50MB", help="which snapshot: fresh, 10MB, 50MB (default 50MB)")
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    work = pathlib.Path(args.work_dir)
    pristine = work / f"replay-{args.phase}.pristine"
    transcripts = glob.glob(str(work / "home" / ".claude" / "projects" / "*" / "*.jsonl"))
    if not pristine.is_dir() or not transcripts:
        print(f"profile_stop: {pristine} or the session transcript is missing: run bench_hook.py with --keep first", file=sys.stderr)
        return 2
    event = json.dumps(last_stop_event(transcripts[0])).encode()
    h.start_sender = lambda *a, **k: None  # the hook's work only; the sender is another process
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="profile-stop-"))

    def run() -> float:
        state = scratch / "state"
        shutil.rmtree(state, ignore_errors=True)
        shutil.copytree(pristine, state)
        settings = h.load_settings(
            {"CC_LANGFUSE_STATE_DIR": str(state), "HOME": str(scratch), "CC_LANGFUSE_BASE_URL": "http://127.0.0.1:9"}
        )
        t = time.perf_counter()
        h.run_hook(event, settings)
        return (time.perf_counter() - t) * 1000

    times = [run() for _ in range(args.runs)]
    entry = next(iter(json.load(open(pristine / "langfuse_state.json"))["transcripts"].values()))
    print(
        f"transcript {os.path.getsize(transcripts[0]) / 1048576:.1f} MB, cursor at {entry['offset'] / 1048576:.1f} MB; "
        f"run_hook warm: median {statistics.median(times):.1f} ms (min {min(times):.1f}, max {max(times):.1f}) over {len(times)} runs"
    )
    profile = cProfile.Profile()
    profile.runcall(run)
    pstats.Stats(profile).sort_stats("cumulative").print_stats(15)
    shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
