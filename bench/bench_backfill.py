#!/usr/bin/env python3
"""Benchmark of `langfuse_hook.py backfill` and `drain` (by hand; never part of CI timing).

Sessions are built from turns the real Claude Code CLI (2.1.328) wrote against the scripted
Messages API in a seed run (no hook): each session starts with a copy of the CLI's first-turn
block (session start, the big attachments) followed by copies of its later turns, every copy with
fresh uuids / promptIds / message and tool ids and the parentUuid chain kept (see
bench_hook.clone_block). Then, in a temporary HOME with keys in ~/.claude/langfuse/config.json:

  (a) `backfill` into the local queue: turns read / wall seconds of the command;
  (b) `drain` to the Langfuse stand-in (tests/langfuse_standin.py, its own process, loopback):
      records sent / wall seconds, checked against the root spans the stand-in recorded;
  (c) `backfill` of a single ~100 MB transcript in its own HOME: peak RSS (getrusage of the
      child, from a wrapper process) and turns/s.

Backfill wakes the background worker when it is done, as it does for users. In (a) and (c) the
benchmark holds the worker's lock while the command runs (a worker "is running"), so backfill starts
none and (b) measures `drain` alone, which takes the lock itself.

    .venv/bin/python bench/bench_backfill.py            # 2,000 turns + 100 MB, ~1 min on 2 cores
    .venv/bin/python bench/bench_backfill.py --quick    # 400 turns + 20 MB
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from bench_hook import (  # noqa: E402
    HOOK,
    MB,
    REPO,
    RESULTS,
    StandinProcess,
    clone_block,
    export_source,
    git_rev,
    loadavg,
    machine_info,
    split_runs,
    turn_script,
    worker_busy,
)
from fake_messages_api import reply  # noqa: E402
from fixtures_claude_cli import install_claude_cli, run_claude  # noqa: E402

TARGETS = {"backfill_turns_per_s": 50, "drain_turns_per_s": 50, "backfill_100mb_peak_rss_mb": 150}
WRAPPER = (
    "import json, resource, subprocess, sys, time\n"
    "t = time.monotonic()\n"
    "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "wall = time.monotonic() - t\n"
    "ru = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "print(json.dumps({'maxrss_kb': ru.ru_maxrss, 'wall_s': wall, 'cpu_s': ru.ru_utime + ru.ru_stime,\n"
    "                  'rc': p.returncode, 'stdout': p.stdout, 'stderr': p.stderr[-4000:]}))\n"
)


def seed_turns(python: str, work: pathlib.Path, claude: str) -> tuple[list[bytes], str, pathlib.Path]:
    """A few turns written by the real CLI: Bash turns (thinking, text, tool call, answer) and plain answers."""
    home, project = work / "seed-home", work / "seed-project"
    (home / ".claude").mkdir(parents=True)
    project.mkdir()
    session = None
    scripts = [
        turn_script("seed", 1),
        [reply("A plain answer: the build is green and nothing needs doing.")],
        turn_script("seed", 2),
        [reply("Second plain answer, with a short list:\n- one\n- two\n- three")],
    ]
    for k, script in enumerate(scripts, 1):
        run = run_claude(home, project, f"seed turn {k}: check the build", script, resume=session, claude=claude, timeout=300)
        session = run.session_id
    return run.transcript.read_bytes().splitlines(), session, project


def write_session(
    path: pathlib.Path,
    first: list[bytes],
    later: list[list[bytes]],
    seed_sid: str,
    turns: int | None = None,
    target_bytes: int | None = None,
) -> int:
    """A new session file of `turns` turns (or until `target_bytes`); returns the number of turns."""
    sid = path.stem
    path.parent.mkdir(parents=True, exist_ok=True)
    tail = None
    n = 0
    with open(path, "wb") as fh:
        while (turns is not None and n < turns) or (target_bytes is not None and fh.tell() < target_bytes):
            block = first if n == 0 else later[(n - 1) % len(later)]
            lines, tail = clone_block(block, seed_sid, tail, new_session_id=sid)
            fh.write(b"".join(lines))
            n += 1
    return n


def config_home(home: pathlib.Path, public_key: str, secret_key: str, base_url: str) -> None:
    conf = home / ".claude" / "langfuse" / "config.json"
    conf.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"CC_LANGFUSE_PUBLIC_KEY": public_key, "CC_LANGFUSE_SECRET_KEY": secret_key, "CC_LANGFUSE_BASE_URL": base_url}, fh)


def run_wrapped(python: str, argv: list[str], env: dict) -> dict:
    proc = subprocess.run([python, "-c", WRAPPER] + argv, capture_output=True, text=True, env=env, timeout=3600)
    out = json.loads(proc.stdout)
    if out["rc"] != 0:
        raise RuntimeError("%s exited %s: %s %s" % (" ".join(argv[-2:]), out["rc"], out["stdout"], out["stderr"]))
    return out


def backfill_counts(stdout: str) -> dict:
    m = re.search(r"backfill: (\d+) session\(s\), (\d+) turn\(s\) read, (\d+) trace record\(s\) queued \(([\d.]+) MB\)", stdout)
    if not m:
        raise RuntimeError("unexpected backfill output: %r" % stdout)
    return {"sessions": int(m.group(1)), "turns": int(m.group(2)), "records": int(m.group(3)), "queued_mb": float(m.group(4))}


def wait_worker_idle(state_dir: pathlib.Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and worker_busy(state_dir):
        time.sleep(0.2)


class WorkerLockHeld:
    """Hold <state>/locks/worker.lock: to backfill a worker is running, so it wakes none."""

    def __init__(self, state_dir: pathlib.Path):
        (state_dir / "locks").mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(state_dir, 0o700)
        self.path = state_dir / "locks" / "worker.lock"

    def __enter__(self):
        import fcntl

        self.fh = open(self.path, "a+b")
        fcntl.flock(self.fh, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        self.fh.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=20, help="sessions for (a)/(b) (default 20)")
    parser.add_argument("--turns", type=int, default=2000, help="turns in all, spread over the sessions (default 2000)")
    parser.add_argument("--big-mb", type=int, default=100, help="size of the single transcript for (c) (default 100)")
    parser.add_argument("--quick", action="store_true", help="400 turns over 8 sessions, 20 MB for (c)")
    parser.add_argument(
        "--python",
        default=str(REPO / ".venv" / "bin" / "python"),
        help="interpreter that runs the hook file (default: the repo's .venv, which has the SDK)",
    )
    parser.add_argument("--source", default="HEAD", help="commit whose hook is measured (default HEAD); worktree: the files as they are")
    parser.add_argument("--keep", action="store_true", help="keep the temporary HOMEs, queue and span record")
    args = parser.parse_args(argv)
    if args.quick:
        args.sessions, args.turns, args.big_mb = 8, 400, 20
    started = time.time()
    claude = install_claude_cli()
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench-backfill-"))
    # the committed hook (git archive), never a working tree someone is editing
    hook = export_source(args.source, work / "src") / "hooks" / HOOK.name
    results: dict = {
        "targets": TARGETS,
        "machine": machine_info(args.python, claude, hook.parent.parent),
        "source": {"rev": args.source, "commit": git_rev(args.source)},
        "load_start": loadavg(),
        "command": " ".join([sys.executable] + sys.argv),
    }
    standin = None
    print(f"work dir {work}", flush=True)
    try:
        rows, seed_sid, seed_project = seed_turns(args.python, work, claude)
        blocks = split_runs(rows)
        first, later = blocks[0], blocks[1:]

        # (a) backfill of many sessions into the queue
        home = work / "home"
        slug = home / ".claude" / "projects" / ("-" + str(seed_project).strip("/").replace("/", "-"))
        per = [args.turns // args.sessions + (1 if i < args.turns % args.sessions else 0) for i in range(args.sessions)]
        total_bytes = 0
        for n in per:
            path = slug / f"{uuid.uuid4()}.jsonl"
            write_session(path, first, later, seed_sid, turns=n)
            total_bytes += path.stat().st_size
        standin = StandinProcess(args.python, work)
        config_home(home, standin.public_key, standin.secret_key, standin.base_url)
        state_dir = home / ".claude" / "state"
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "LANG": os.environ.get("LANG", "C.UTF-8")}
        print(f"(a) backfill of {sum(per)} turns in {args.sessions} sessions ({total_bytes / MB:.1f} MB) ...", flush=True)
        load_a = loadavg()
        with WorkerLockHeld(state_dir):
            out = run_wrapped(args.python, [args.python, "-I", str(hook), "backfill", "--since", "30d"], env)
        counts = backfill_counts(out["stdout"])
        results["backfill"] = dict(
            counts,
            wall_s=round(out["wall_s"], 2),
            turns_per_s=round(counts["turns"] / out["wall_s"], 1),
            cpu_s=round(out["cpu_s"], 2),  # what a busy machine does not add: turns per CPU second compare across loads
            turns_per_cpu_s=round(counts["turns"] / max(out["cpu_s"], 1e-6), 1),
            peak_rss_mb=round(out["maxrss_kb"] / 1024, 1),
            transcripts_mb=round(total_bytes / MB, 1),
            built_turns=sum(per),
            load_before=load_a,
            load_after=loadavg(),
        )

        # (b) drain to the stand-in (no worker was started: `drain` alone sends the queue)
        wait_worker_idle(state_dir)
        print(f"(b) drain of {counts['records']} records to the stand-in {standin.base_url} ...", flush=True)
        load_b = loadavg()
        out = run_wrapped(args.python, [args.python, "-I", str(hook), "drain"], env)
        m = re.search(r"drain: (\d+) sent, (\d+) moved to dead letters, (\d+) corrupt line\(s\) set aside, (\d+) left", out["stdout"])
        if not m:
            raise RuntimeError("unexpected drain output: %r" % out["stdout"])
        sent = int(m.group(1))
        time.sleep(0.5)
        standin.poll()
        results["drain"] = {
            "sent": sent,
            "dead": int(m.group(2)),
            "left": int(m.group(4)),
            "wall_s": round(out["wall_s"], 2),
            "turns_per_s": round(sent / out["wall_s"], 1),
            "peak_rss_mb": round(out["maxrss_kb"] / 1024, 1),
            "standin_traces_with_root": len(standin.first_root_arrival),
            "standin_spans": standin.spans,
            "load_before": load_b,
            "load_after": loadavg(),
        }
        standin.stop()

        # (c) one big transcript: peak RSS
        big_home = work / "home-big"
        big_path = big_home / ".claude" / "projects" / slug.name / f"{uuid.uuid4()}.jsonl"
        big_turns = write_session(big_path, first, later, seed_sid, target_bytes=args.big_mb * MB)
        config_home(big_home, standin.public_key, standin.secret_key, "http://127.0.0.1:9")
        big_env = dict(env, HOME=str(big_home))
        print(f"(c) backfill of one {big_path.stat().st_size / MB:.0f} MB transcript ({big_turns} turns) ...", flush=True)
        load_c = loadavg()
        with WorkerLockHeld(big_home / ".claude" / "state"):
            out = run_wrapped(args.python, [args.python, "-I", str(hook), "backfill", "--since", "30d"], big_env)
        counts = backfill_counts(out["stdout"])
        results["backfill_big"] = dict(
            counts,
            transcript_mb=round(big_path.stat().st_size / MB, 1),
            wall_s=round(out["wall_s"], 2),
            turns_per_s=round(counts["turns"] / out["wall_s"], 1),
            cpu_s=round(out["cpu_s"], 2),
            turns_per_cpu_s=round(counts["turns"] / max(out["cpu_s"], 1e-6), 1),
            peak_rss_mb=round(out["maxrss_kb"] / 1024, 1),
            load_before=load_c,
            load_after=loadavg(),
        )
        wait_worker_idle(big_home / ".claude" / "state")
    finally:
        if standin:
            standin.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    results["load_end"] = loadavg()
    results["elapsed_s"] = round(time.time() - started, 1)
    b, d, c = results["backfill"], results["drain"], results["backfill_big"]
    rows = [
        (
            "(a) backfill into the queue",
            f"{b['turns_per_s']} turns/s ({b['turns']} turns, {b['transcripts_mb']} MB, {b['wall_s']} s, {b['turns_per_cpu_s']} turns/CPU-s; "
            f"RSS {b['peak_rss_mb']} MB)",
            f">= {TARGETS['backfill_turns_per_s']} turns/s",
            b["turns_per_s"] >= TARGETS["backfill_turns_per_s"],
        ),
        (
            "(b) drain to the stand-in",
            f"{d['turns_per_s']} turns/s ({d['sent']} sent in {d['wall_s']} s; stand-in has {d['standin_traces_with_root']} root spans)",
            f">= {TARGETS['drain_turns_per_s']} turns/s",
            d["turns_per_s"] >= TARGETS["drain_turns_per_s"] and d["standin_traces_with_root"] >= d["sent"],
        ),
        (
            f"(c) backfill peak RSS, {c['transcript_mb']} MB transcript",
            f"{c['peak_rss_mb']} MB ({c['turns']} turns, {c['turns_per_s']} turns/s, {c['turns_per_cpu_s']} turns/CPU-s)",
            f"<= {TARGETS['backfill_100mb_peak_rss_mb']} MB",
            c["peak_rss_mb"] <= TARGETS["backfill_100mb_peak_rss_mb"],
        ),
    ]
    results["verdicts"] = [{"measure": a, "measured": v, "target": t, "ok": ok} for a, v, t, ok in rows]
    RESULTS.mkdir(parents=True, exist_ok=True)
    out_path = RESULTS / ("bench_backfill-%s.json" % dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ"))
    out_path.write_text(json.dumps(results, indent=1))
    w0, w1 = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
    print(f"\n{'measure':<{w0}}  {'measured':<{w1}}  {'target':<16} verdict")
    for a, v, t, ok in rows:
        print(f"{a:<{w0}}  {v:<{w1}}  {t:<16} {'PASS' if ok else 'MISS'}")
    print(
        f"  load {results['load_start']} -> {results['load_end']}; {results['elapsed_s']} s; results in {out_path}"
        + (f"; work dir kept: {work}" if args.keep else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
