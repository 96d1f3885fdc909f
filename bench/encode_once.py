"""What encoding a record costs the worker, and a snapshot to compare process_event on fairly.

Takes a folder kept by `bench_hook.py --keep` and the `open` scenario's snapshot (25 MB open turn).
The record the worker makes of it is built once with the hooks/ folder given; then, on the thread's
CPU clock, interleaved, the work the queue path does to it:
  - before 75d4197: `record_rev` (sorted JSON), `observation_rev` per observation, `json_line`;
  - since: `encode_record` (each observation once, compact, keys sorted) and `record_line`.
Whichever of the two the hooks/ folder has is measured (run it once per folder).

--upgraded OUT writes a copy of the kept folder whose open snapshot holds the revs this hooks/
folder gives the turns the snapshot had already queued (all but the open one), as if it had queued
them: profile_stop.py on OUT measures the same work as on the original with the code before (a rev
changed by the encoding would queue the seed turn again, which the code before does not).

    .venv/bin/python bench/encode_once.py /tmp/bench-hook-XXXX --hooks /tmp/before/hooks
    .venv/bin/python bench/encode_once.py /tmp/bench-hook-XXXX --hooks /tmp/after/hooks --upgraded /tmp/bench-hook-upg
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import time


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("work_dir")
    ap.add_argument("--hooks", required=True, help="the hooks/ folder to import (a git archive export)")
    ap.add_argument("--variant", default="cached")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--upgraded", help="write the upgraded copy of the kept folder here")
    args = ap.parse_args()
    sys.path.insert(0, args.hooks)
    from claude_code_langfuse import collect, config, redaction, store
    from claude_code_langfuse.event import event_from_dict

    work = pathlib.Path(args.work_dir)
    snap_dir = work / args.variant / "snap-open"
    snap = json.loads((snap_dir / "snapshot.json").read_text())
    scratch = pathlib.Path(tempfile.mkdtemp())
    try:
        copy = scratch / "transcript.jsonl"
        with open(snap["transcript"], "rb") as f:
            copy.write_bytes(f.read(snap["transcript_bytes"]))
        state = json.loads((snap_dir / "state" / "langfuse_state.json").read_text())
        key = store.state_key(snap["session_id"], snap["transcript"])
        entry = dict(state["transcripts"][key], path=str(copy), inode=os.stat(copy).st_ino)
        shutil.copytree(snap_dir / "state", scratch / "state")  # its facts are part of the records
        settings = config.load_settings({"HOME": str(scratch), "CC_LANGFUSE_STATE_DIR": str(scratch / "state")})
        event = event_from_dict(dict(snap["event"], transcript_path=str(copy)))
        result = collect.collect_records(event, entry, settings, collect.make_redactor(settings, config.get_logger(settings)))
        rec = dict(result.records[-1])
        rec.pop("rev", None)
        stamp = "2026-12-02T00:00:00.000Z"

        if hasattr(redaction, "encode_record"):
            name = "encode_record + record_line"

            def queue_path() -> bytes:
                r, rev, _revs = redaction.encode_record(rec)
                r["rev"] = rev
                return store.record_line(r, stamp)
        else:
            name = "record_rev + observation_rev + json_line"

            def queue_path() -> bytes:
                rev = redaction.record_rev(rec)
                _revs = {o["id"]: collect.observation_rev(o) for o in rec["observations"]}
                return store.json_line(dict(rec, queued_at=stamp, rev=rev))

        line = queue_path()
        cpu = []
        for _ in range(args.runs):
            t = time.thread_time()
            queue_path()
            cpu.append((time.thread_time() - t) * 1000)
        print(f"{args.hooks}: the open turn's record, {len(line) / 1048576:.1f} MB queued, {len(rec['observations'])} observations")
        print(f"  {name}: median {statistics.median(cpu):.0f} ms CPU (min {min(cpu):.0f}) over {args.runs} runs")

        if args.upgraded:
            open_key = list(result.entry["emitted"])[-1]
            old = state["transcripts"][key]
            changed = [k for k in old.get("emitted", {}) if k != open_key and old["emitted"][k] != result.entry["emitted"].get(k)]
            for k in changed:
                old["emitted"][k] = result.entry["emitted"][k]
                if k in old.get("sent", {}):
                    old["sent"][k] = result.entry["sent"][k]
            out = pathlib.Path(args.upgraded)
            shutil.rmtree(out, ignore_errors=True)
            (out / args.variant).mkdir(parents=True)
            for p in work.iterdir():
                if p.name != args.variant:
                    os.symlink(p, out / p.name)
            for p in (work / args.variant).iterdir():
                if p.name != "snap-open":
                    os.symlink(p, out / args.variant / p.name)
            shutil.copytree(snap_dir, out / args.variant / "snap-open")
            (out / args.variant / "snap-open" / "state" / "langfuse_state.json").write_text(json.dumps(state))
            print(f"  {out}: snap-open with this code's revs for {len(changed)} queued turn(s) (the open turn {open_key} left as it was)")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
