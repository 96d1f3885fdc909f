"""Where a Stop's time goes: the hook process, and separately the worker's work for that event.

Takes a work folder kept by `bench_hook.py --keep` and the state snapshot it took just before a
scenario's last measured Stop (`<variant>/snap-<scenario>/`: the worker's state, the transcript's
size after that run and the Stop event as Claude Code sent it). Prints:

1. The hook process (what Claude Code waits for):
   - wall time of the installed hook command vs a do-nothing `<python> -I -c pass`, outside Claude
     Code, interleaved (a "running worker" holds the lock, so the hook spawns nothing; see
     bench_hook.py's diagnosis for the spawn);
   - `-X importtime` of the hook process: what it imports beyond what `-c pass` imports;
   - `hook_main()` in-process and warm (no start-up, no imports): validate, write the news, probe
     the worker lock (the spawn is stubbed), and its cProfile.
2. The worker's work for the same event (not waited for by Claude Code; it is the Stop -> Langfuse
   latency): `claude_code_langfuse.collect.process_event` on a scratch copy of the snapshot and of
   the transcript as it was after that run (read from the cursor, group, redact, queue, move the
   cursor), warm, a few runs, and its cProfile.

    .venv/bin/python bench/bench_hook.py --quick --keep --variants cached
    .venv/bin/python bench/profile_stop.py /tmp/bench-hook-XXXX --scenario open
"""

from __future__ import annotations

import argparse
import cProfile
import fcntl
import io
import json
import os
import pathlib
import pstats
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent


def use_source(work_dir: pathlib.Path, hooks_dir: str | None = None) -> None:
    """Import the package the benchmark measured (its git archive export in the work folder), not
    a working tree someone may be editing; or the hooks/ folder given (another commit's export)."""
    src = pathlib.Path(hooks_dir) if hooks_dir else work_dir / "src" / "hooks"
    sys.path.insert(0, str(src if src.is_dir() else REPO / "hooks"))
    global collect, config, hook, redaction, runtime, store, event_from_dict
    from claude_code_langfuse import collect, config, hook, redaction, runtime, store
    from claude_code_langfuse.event import event_from_dict


def installed_entry(variant_dir: pathlib.Path) -> pathlib.Path:
    for candidate in (variant_dir / "home" / ".claude" / "langfuse" / "langfuse_hook.py", variant_dir / "hook" / "langfuse_hook.py"):
        if candidate.exists():
            return candidate
    raise SystemExit(f"profile_stop: no installed langfuse_hook.py under {variant_dir}")


def registered_argv(variant_dir: pathlib.Path) -> list[str]:
    import shlex

    settings = json.loads((variant_dir / "home" / ".claude" / "settings.json").read_text())
    for group in settings["hooks"]["Stop"]:
        for h in group["hooks"]:
            if "langfuse_hook" in h["command"]:
                return shlex.split(h["command"])
    raise SystemExit("profile_stop: no hook command in settings.json")


def imports(argv: list[str], stdin: bytes, env: dict) -> dict[str, tuple[int, int, int]]:
    proc = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], input=stdin, capture_output=True, env=env, timeout=120)
    out = {}
    for line in proc.stderr.decode(errors="replace").splitlines():
        m = re.match(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)", line)
        if m:
            out[m.group(4)] = (int(m.group(1)), int(m.group(2)), (len(m.group(3)) - 1) // 2)
    return out


def profile_hook_process(argv: list[str], event: bytes, scratch: pathlib.Path, runs: int) -> None:
    state = scratch / "hook-state"
    (state / "locks").mkdir(parents=True)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(scratch), "CC_LANGFUSE_STATE_DIR": str(state), "TRACE_TO_LANGFUSE": "false"}
    holder = open(state / "locks" / "worker.lock", "a+b")
    fcntl.flock(holder, fcntl.LOCK_EX)  # a running worker: the hook writes its news and spawns nothing
    try:
        floor = [argv[0], "-I", *(["-B"] if "-B" in argv else []), "-c", "pass"]
        times: dict[str, list[float]] = {"do-nothing": [], "hook": []}
        for _ in range(runs):
            for name, cmd in (("do-nothing", floor), ("hook", argv)):
                t = time.perf_counter()
                subprocess.run(cmd, input=event, capture_output=True, env=env, timeout=120)
                times[name].append((time.perf_counter() - t) * 1000)
        fm, hm = statistics.median(times["do-nothing"]), statistics.median(times["hook"])
        print(f"hook process, outside Claude Code ({runs} interleaved runs, worker running so no spawn):")
        print(f"  do-nothing `{' '.join(floor[1:])}` {fm:.1f} ms; hook `{' '.join(argv[1:])}` {hm:.1f} ms; ratio {hm / fm:.2f}")
        base, ours = imports(floor, event, env), imports(argv, event, env)
        extra = {k: v for k, v in ours.items() if k not in base}
        print(
            f"  -X importtime: {len(extra)} modules beyond the do-nothing hook's, {sum(v[0] for v in extra.values()) / 1000:.1f} ms "
            f"(self times; importtime's own overhead included); the package's own: "
            f"{sum(v[0] for k, v in extra.items() if k.startswith('claude_code_langfuse')) / 1000:.1f} ms"
        )
        for name, (self_us, cum_us, depth) in sorted(extra.items(), key=lambda kv: -kv[1][1])[:14]:
            print(f"    {cum_us / 1000:6.1f} ms cumulative {self_us / 1000:5.1f} self  {'  ' * depth}{name}")
    finally:
        holder.close()

    # in-process, warm: the hook's own work once the interpreter and its imports are there
    spawned = []
    runtime.spawn_detached = lambda argv_, log: spawned.append(argv_) or True  # the worker is another process

    def run_once() -> float:
        st = scratch / "inproc-state"
        shutil.rmtree(st, ignore_errors=True)
        os.environ["CC_LANGFUSE_STATE_DIR"] = str(st)
        sys.stdin = io.TextIOWrapper(io.BytesIO(event))
        t = time.perf_counter()
        hook.hook_main()
        return (time.perf_counter() - t) * 1000

    old_env = dict(os.environ)
    old_stdin = sys.stdin
    try:
        os.environ["HOME"] = str(scratch)
        times_in = [run_once() for _ in range(runs)]
        print(
            f"  hook_main() in-process, warm: median {statistics.median(times_in):.2f} ms (min {min(times_in):.2f}) over {runs} runs;"
            f" it asked to start the worker {len(spawned)} time(s)"
        )
        prof = cProfile.Profile()
        prof.runcall(run_once)
        pstats.Stats(prof).sort_stats("cumulative").print_stats(8)
    finally:
        sys.stdin = old_stdin
        os.environ.clear()
        os.environ.update(old_env)


def profile_worker_event(snap_dir: pathlib.Path, scratch: pathlib.Path, runs: int) -> None:
    snap = json.loads((snap_dir / "snapshot.json").read_text())
    original = snap["transcript"]
    copy = scratch / "transcript.jsonl"
    with open(original, "rb") as src, open(copy, "wb") as dst:
        remaining = snap["transcript_bytes"]
        while remaining > 0:
            chunk = src.read(min(remaining, 1 << 20))
            if not chunk:
                break
            dst.write(chunk)
            remaining -= len(chunk)
    pristine = scratch / "worker-state.pristine"
    shutil.copytree(snap_dir / "state", pristine)
    state = json.loads((pristine / "langfuse_state.json").read_text())
    old_key, new_key = store.state_key(snap["session_id"], original), store.state_key(snap["session_id"], str(copy))
    entry = state["transcripts"].pop(old_key, None)
    if entry is not None:
        # the copy is the same bytes under another path and inode: tell the worker so, or it would
        # take the file for a replaced one and re-read it from the start
        entry["path"] = str(copy)
        entry["inode"] = os.stat(copy).st_ino
        state["transcripts"][new_key] = entry
    (pristine / "langfuse_state.json").write_text(json.dumps(state))
    event = event_from_dict(dict(snap["event"], transcript_path=str(copy)))
    settings = config.load_settings({"HOME": str(scratch), "CC_LANGFUSE_STATE_DIR": str(scratch / "worker-state")})
    log = config.get_logger(settings)
    cursor = (entry or {}).get("offset", 0)

    def run_once(reuse: bool = False) -> tuple[float, int, float]:
        st = scratch / "worker-state"
        shutil.rmtree(st, ignore_errors=True)
        shutil.copytree(pristine, st)
        if not reuse:  # each run as a new worker would do it: no redaction results kept from the run before
            getattr(redaction, "_RESULT_CACHES", {}).clear()
        t, cpu = time.perf_counter(), time.thread_time()
        outcome = collect.process_event(event, settings, log, final=True)
        return (time.perf_counter() - t) * 1000, outcome.queued, (time.thread_time() - cpu) * 1000

    results = [run_once() for _ in range(runs)]
    times, cpu = [r[0] for r in results], [r[2] for r in results]
    size = os.path.getsize(copy)
    print(
        f"\nworker, per event: process_event on the {snap['event']['hook_event_name']} of {snap_dir.name} "
        f"(transcript {size / 1048576:.1f} MB, cursor at {cursor / 1048576:.1f} MB: {(size - cursor) / 1048576:.1f} MB to read)"
    )
    print(
        f"  warm: median {statistics.median(times):.1f} ms (min {min(times):.1f}, max {max(times):.1f}) over {runs} runs;"
        f" {results[0][1]} record(s) queued per run"
    )
    print(
        f"  CPU time of this thread (what load on a shared machine does not add): median {statistics.median(cpu):.1f} ms (min {min(cpu):.1f})"
    )
    if hasattr(redaction, "_RESULT_CACHES"):
        again = [run_once(reuse=True) for _ in range(min(runs, 3))]
        print(
            "  the same event again in the same process (redaction results reused): "
            f"median {statistics.median(r[0] for r in again):.1f} ms, CPU {statistics.median(r[2] for r in again):.1f} ms"
        )
    prof = cProfile.Profile()
    prof.runcall(run_once)
    pstats.Stats(prof).sort_stats("cumulative").print_stats(18)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("work_dir", help="a folder kept by bench_hook.py --keep")
    ap.add_argument("--variant", default="cached", help="cached or no-bytecode (default cached)")
    ap.add_argument("--scenario", default="fresh", help="whose snapshot: fresh, grown or open (default fresh)")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--hooks", help="hooks/ folder to import instead of the work folder's export (e.g. another commit's git archive)")
    args = ap.parse_args()
    use_source(pathlib.Path(args.work_dir), args.hooks)
    variant_dir = pathlib.Path(args.work_dir) / args.variant
    snap_dir = variant_dir / f"snap-{args.scenario}"
    if not (snap_dir / "snapshot.json").exists():
        print(f"profile_stop: {snap_dir}/snapshot.json is missing: run bench_hook.py with --keep first", file=sys.stderr)
        return 2
    snap = json.loads((snap_dir / "snapshot.json").read_text())
    event = json.dumps(snap["event"]).encode()
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="profile-stop-"))
    try:
        argv = registered_argv(variant_dir)
        installed_entry(variant_dir)
        profile_hook_process(argv, event, scratch, max(args.runs, 15))
        profile_worker_event(snap_dir, scratch, args.runs)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
