#!/usr/bin/env python3
"""Benchmark of the Stop hook as Claude Code runs it (by hand; never part of CI timing).

Drives the real Claude Code CLI (2.1.328) against the scripted Messages API
(tests/fake_messages_api.py), with the hook installed in a temporary HOME by the installer's own
helper (scripts/settings_merge.py apply: copied and byte-compiled, config.json 0600,
`<venv python> -m langfuse_hook` for Stop, SubagentStop and SessionEnd; only pip is skipped), and
the Langfuse stand-in (tests/langfuse_standin.py --record) running in its own process on 127.0.0.1.

Phases: `fresh` (a new session, N turns), then the same session grown to 10 MB and 50 MB by
appending copies of turns the CLI itself wrote in the fresh phase (fresh uuids, promptIds,
message ids, tool ids; parentUuid chain kept), one unmeasured --resume turn so the hook catches
up, a wait until the queue is drained, then N measured --resume turns.

Measured per phase:
  - hook duration as Claude Code records it: `system/stop_hook_summary` -> hookInfos[].durationMs
    of our command (median, max);
  - Stop -> the turn's root span received by the stand-in: record file `received_at` minus the
    hook start, taken as the stop_hook_summary timestamp minus durationMs (the CLI writes the
    summary right after the hook returned; no wrapper, so nothing is added to what we measure);
  - peak RSS of the hook process: the last measured Stop event replayed under a wrapper that
    reads getrusage(RUSAGE_CHILDREN), on a snapshot of the state taken just before that Stop (so
    the replay reads and queues what the live run did).

    .venv/bin/python bench/bench_hook.py            # ~5 min on 2 cores
    .venv/bin/python bench/bench_hook.py --quick    # ~1 min: 8 turns per phase, 10 MB only
    .venv/bin/python bench/bench_hook.py --interleave --sizes 50 --no-baseline   # growth under drift

--interleave: the phases above run minutes apart, and on a shared VM the machine's speed drifts
by tens of percent over minutes, more than the growth being measured. This mode keeps two
sessions in the same HOME, a fresh one and one grown to the target size (same growth, catch-up
turn and drain as above), and alternates the measured turns between them (fresh, big, fresh,
big, ...), so each pair sees the same machine. Per size it reports both medians, the growth of
the medians, and the median of the per-pair differences (big - fresh) with its ratio to the
fresh median, the figure drift moves least.

Prints a table and writes bench/results/bench_hook-<utc time>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import pathlib
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tests"), str(REPO / "hooks")]

from fake_messages_api import reply, thinking, tool_use  # noqa: E402
from fixtures_claude_cli import (  # noqa: E402
    HOOK_EVENTS,
    hook_command,
    install_claude_cli,
    read_jsonl,
    run_claude,
    write_hook_settings,
)

HOOK = REPO / "hooks" / "langfuse_hook.py"
STANDIN = REPO / "tests" / "langfuse_standin.py"
RESULTS = REPO / "bench" / "results"
MB = 1024 * 1024

TARGETS = {"hook_median_ms": 60, "median_growth_pct": 10, "stop_to_standin_p95_s": 3.0, "hook_peak_rss_mb": 50}

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
API_ID_RE = re.compile(r"\b(msg|toolu|req|srvtoolu)_[A-Za-z0-9]+")


# ------------------------------------------------------------------------------ small helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation: every figure is a value that was measured)."""
    ordered = sorted(values)
    rank = max(1, int(-(-q * len(ordered) // 100)))
    return ordered[min(rank, len(ordered)) - 1]


def parse_ts(value: str) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def trace_id_for(session_id: str, turn_key: str) -> str:
    # design.md: trace_id = sha256("<session_id>:<turn key>")[:32]
    return hashlib.sha256(f"{session_id}:{turn_key}".encode()).hexdigest()[:32]


def machine_info(python: str, claude: str | None) -> dict:
    def out(argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = "%.1f GiB" % (int(line.split()[1]) / 1048576)
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "mem_total": mem,
        "kernel": platform.release(),
        "python": out([python, "--version"]),
        "claude": out([claude, "--version"]) if claude else "",
        "hook_sha256": hashlib.sha256(HOOK.read_bytes()).hexdigest()[:16],
    }


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ------------------------------------------------------------------------------ stand-in process


def sender_busy(state_dir: pathlib.Path) -> bool:
    """Does a sender of this state folder hold its lock right now?"""
    import fcntl

    locks = state_dir / "locks"
    for lock in locks.glob("sender*.lock") if locks.exists() else []:
        with open(lock, "rb") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fh, fcntl.LOCK_UN)
            except OSError:
                return True
    return False


def remove_tree(path: pathlib.Path, wait_s: float = 10.0) -> None:
    """rmtree that waits out a detached sender still finishing in the folder."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            shutil.rmtree(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class StandinProcess:
    """tests/langfuse_standin.py in its own process, recording every span with its receive time."""

    def __init__(self, python: str, workdir: pathlib.Path):
        token = secrets.token_hex(6)
        self.public_key, self.secret_key = f"pk-lf-bench-{token}", f"sk-lf-bench-{token}"
        self.port = free_port()
        self.record = workdir / "standin-spans.jsonl"
        self.proc = subprocess.Popen(
            [
                python,
                str(STANDIN),
                "--port",
                str(self.port),
                "--public-key",
                self.public_key,
                "--secret-key",
                self.secret_key,
                "--record",
                str(self.record),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline()
        if "listening" not in line:
            raise RuntimeError("the stand-in did not start: %s %s" % (line, self.proc.stderr.read()))
        self._offset = 0
        self.first_root_arrival: dict[str, float] = {}
        self.first_arrival: dict[str, float] = {}
        self.spans = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def poll(self) -> None:
        """Read spans recorded since the last poll (complete lines only)."""
        if not self.record.exists():
            return
        with open(self.record, "rb") as fh:
            fh.seek(self._offset)
            data = fh.read()
        end = data.rfind(b"\n") + 1
        self._offset += end
        for line in data[:end].splitlines():
            span = json.loads(line)
            self.spans += 1
            tid = span["trace_id"]
            self.first_arrival.setdefault(tid, span["received_at"])
            if not span["parent_span_id"]:
                self.first_root_arrival.setdefault(tid, span["received_at"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ------------------------------------------------------------------------------ transcript growth


def split_runs(rows_raw: list[bytes]) -> list[list[bytes]]:
    """Transcript lines cut into one block per `claude -p` run (each starts with a queue enqueue)."""
    blocks: list[list[bytes]] = []
    for raw in rows_raw:
        row = json.loads(raw)
        if row.get("type") == "queue-operation" and row.get("operation") == "enqueue" or not blocks:
            blocks.append([])
        blocks[-1].append(raw)
    return blocks


def last_uuid(rows_raw: list[bytes]) -> str | None:
    for raw in reversed(rows_raw):
        u = json.loads(raw).get("uuid")
        if u:
            return u
    return None


def clone_block(
    block: list[bytes], session_id: str, tail_uuid: str | None, new_session_id: str | None = None
) -> tuple[list[bytes], str | None]:
    """A copy of one run's lines as a new, distinct turn of the same session (or of new_session_id).

    Every uuid-shaped value (row uuids, promptId, toolUseID, runId...) except the session id gets
    a fresh uuid, consistently within the block; msg_/toolu_/req_ ids likewise. A parentUuid that
    points outside the block is pointed at `tail_uuid`, so the conversation chain the CLI
    follows on --resume stays unbroken. Returns the new lines and the block's new last uuid."""
    rows = [json.loads(raw) for raw in block]
    internal = {r["uuid"] for r in rows if r.get("uuid")}
    mapping: dict[str, str] = {session_id: new_session_id or session_id}
    for r in rows:
        for key in ("parentUuid", "logicalParentUuid"):
            ref = r.get(key)
            if ref and ref not in internal and tail_uuid:
                mapping[ref] = tail_uuid

    def new_uuid(m: re.Match) -> str:
        return mapping.setdefault(m.group(0), str(uuid.uuid4()))

    def new_api_id(m: re.Match) -> str:
        return mapping.setdefault(m.group(0), m.group(1) + "_" + secrets.token_hex(12))

    out = []
    new_tail = tail_uuid
    for raw in block:
        text = API_ID_RE.sub(new_api_id, UUID_RE.sub(new_uuid, raw.decode("utf-8")))
        out.append(text.encode("utf-8") if text.endswith("\n") else text.encode("utf-8") + b"\n")
        u = json.loads(text).get("uuid")
        if u:
            new_tail = u
    return out, new_tail


def grow_transcript(
    path: pathlib.Path, templates: list[list[bytes]], session_id: str, target_bytes: int, source_session_id: str | None = None
) -> int:
    """Append cloned turns until the file reaches target_bytes; returns the number of turns added.

    source_session_id: the session the templates were written in, when it is not session_id
    (their session id is then rewritten to session_id)."""
    with open(path, "rb") as fh:
        tail = last_uuid(fh.read().splitlines()[-400:])
    added = 0
    with open(path, "ab") as fh:
        size = fh.tell()
        while size < target_bytes:
            lines, tail = clone_block(
                templates[added % len(templates)],
                source_session_id or session_id,
                tail,
                new_session_id=session_id if source_session_id else None,
            )
            chunk = b"".join(lines)
            fh.write(chunk)
            size += len(chunk)
            added += 1
    return added


# ------------------------------------------------------------------------------ the bench session


def turn_script(phase: str, k: int) -> list:
    """One realistic turn: thinking + text + a Bash call, then the answer (two API calls)."""
    return [
        reply(
            thinking(f"The user wants the {phase} check #{k}; running it is the quickest way."),
            "Let me run the check.",
            tool_use("Bash", {"command": f"echo check {phase} {k}"}),
            message_id="msg_bench" + secrets.token_hex(10),
        ),
        reply(f"The check printed `check {phase} {k}`. All good.", message_id="msg_bench" + secrets.token_hex(10)),
    ]


class Bench:
    def __init__(self, args):
        self.args = args
        self.python = args.python
        self.claude = install_claude_cli()
        self.work = pathlib.Path(tempfile.mkdtemp(prefix="bench-hook-"))
        self.home = self.work / "home"
        self.project = self.work / "project"
        (self.home / ".claude" / "langfuse").mkdir(parents=True)
        self.project.mkdir()
        self.standin = StandinProcess(self.python, self.work)
        if args.install == "installer":
            self.hook_argv = self.install_like_installer()
        else:
            config = self.home / ".claude" / "langfuse" / "config.json"
            fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(
                    {
                        "CC_LANGFUSE_PUBLIC_KEY": self.standin.public_key,
                        "CC_LANGFUSE_SECRET_KEY": self.standin.secret_key,
                        "CC_LANGFUSE_BASE_URL": self.standin.base_url,
                    },
                    fh,
                )
            self.hook_argv = [self.python, str(HOOK)]
            write_hook_settings(self.home, {event: [hook_command(*self.hook_argv)] for event in HOOK_EVENTS})
        settings = json.loads((self.home / ".claude" / "settings.json").read_text())
        self.command = settings["hooks"]["Stop"][0]["hooks"][0]["command"]
        self.floor_command = ""
        if args.floor_hook:
            # a do-nothing Python Stop hook beside ours, in the same sessions: what Claude Code's own
            # state (a big session, a busy CLI) adds to any hook's durationMs
            self.floor_command = hook_command(self.hook_argv[0], "-c", "pass")
            settings["hooks"]["Stop"].append({"hooks": [{"type": "command", "command": self.floor_command}]})
            (self.home / ".claude" / "settings.json").write_text(json.dumps(settings, indent=2))
        self.state_dir = self.home / ".claude" / "state"
        self.session_id: str | None = None
        self.transcript: pathlib.Path | None = None
        self.prompts: dict[str, tuple[str, int]] = {}  # prompt text -> (phase, k)
        self.sessions: dict[str, tuple[str, pathlib.Path]] = {}  # --interleave: "fresh"/"big" -> (session id, transcript)
        self.measured: list[dict] = []  # every prompted turn found by collect(), with its session id
        self.results: dict = {"phases": {}, "targets": TARGETS, "hook_command": self.command, "install": args.install}

    def install_like_installer(self) -> list[str]:
        """What scripts/install-hook.sh leaves behind, through its own helper (settings_merge.py apply):
        the hook copied to ~/.claude/langfuse/ and byte-compiled, the venv's .pth, config.json (0600)
        and the `<venv python> -m langfuse_hook` command in settings.json. Only the pip step differs:
        the venv is made --without-pip and gets the SDK from the repo's .venv through a second .pth."""
        venv = self.home / ".claude" / "langfuse" / "venv"
        subprocess.run([self.python, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True)
        venv_python = venv / "bin" / "python"

        def purelib(py):
            return subprocess.run(
                [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],  # noqa: E731
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()

        pathlib.Path(purelib(str(venv_python)), "bench_sdk_from_repo_venv.pth").write_text(purelib(self.python) + "\n")
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(self.home),
            "CC_LANGFUSE_PUBLIC_KEY": self.standin.public_key,
            "CC_LANGFUSE_SECRET_KEY": self.standin.secret_key,
            "CC_LANGFUSE_BASE_URL": self.standin.base_url,
        }
        proc = subprocess.run(
            [
                self.python,
                str(REPO / "scripts" / "settings_merge.py"),
                "apply",
                "--home",
                str(self.home),
                "--repo",
                str(REPO),
                "--env-file",
                str(self.work / "no.env"),
            ],
            env=env,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise RuntimeError("settings_merge.py apply failed: %s %s" % (proc.stdout, proc.stderr))
        return [str(venv_python), "-m", "langfuse_hook"]

    def turn(self, phase: str, k: int) -> float:
        prompt = f"bench {phase} {k}: run the check"
        self.prompts[prompt] = (phase, k)
        run = run_claude(self.home, self.project, prompt, turn_script(phase, k), resume=self.session_id, claude=self.claude, timeout=300)
        self.session_id = run.session_id
        self.transcript = run.transcript
        return run.duration

    def queue_records(self) -> int:
        import langfuse_hook as lh  # read-only use: the queue format is the hook's own

        return sum(1 for e in lh.queue_read(str(self.state_dir / "pending_traces.jsonl")) if e.record is not None)

    def wait_drained(self, timeout: float) -> float:
        """Seconds until the queue is empty and no sender holds the sender lock."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.queue_records() == 0 and not sender_busy(self.state_dir):
                return time.monotonic() - t0
            time.sleep(0.25)
        raise RuntimeError(
            "the queue did not drain within %ss (%d records left); see %s/langfuse_hook.log"
            % (timeout, self.queue_records(), self.state_dir)
        )

    # -- phases
    def run_phase(self, phase: str, target_mb: int | None) -> None:
        n = self.args.turns
        info: dict = {"turns": n, "load_before": loadavg()}
        if target_mb is not None:
            rows = self.transcript.read_bytes().splitlines()
            templates = split_runs(rows)[1:] or split_runs(rows)  # later runs: the steady-state shape of a turn
            t0 = time.monotonic()
            info["cloned_turns"] = grow_transcript(self.transcript, templates, self.session_id, target_mb * MB)
            info["grow_s"] = round(time.monotonic() - t0, 1)
            info["size_after_growth_mb"] = round(self.transcript.stat().st_size / MB, 1)
            print(
                f"[{phase}] grew the transcript to {info['size_after_growth_mb']} MB with {info['cloned_turns']} cloned turns;"
                " one unmeasured catch-up turn ...",
                flush=True,
            )
            info["catchup_cli_s"] = round(self.turn(phase + "-catchup", 0), 2)
            info["catchup_drain_s"] = round(self.wait_drained(self.args.drain_timeout), 1)
        else:
            print(f"[{phase}] {n} turns in a new session ...", flush=True)
        info["size_start_mb"] = round(self.transcript.stat().st_size / MB, 2) if self.transcript else 0
        durations = []
        for k in range(1, n + 1):
            if k == n:
                self.snapshot_state(phase)
            durations.append(self.turn(phase, k))
        info["cli_run_s_median"] = round(statistics.median(durations), 2)
        info["size_end_mb"] = round(self.transcript.stat().st_size / MB, 2)
        info["load_after"] = loadavg()
        self.results["phases"][phase] = info
        self.measure_rss(phase)
        if phase != "fresh" and phase == self.args.phases[-1]:
            self.measure_first_sight(phase)

    def turn_on(self, which: str, phase: str, k: int) -> float:
        """One turn in session `which` of --interleave ("fresh" or "big"; None id: a new session)."""
        self.session_id, self.transcript = self.sessions[which]
        duration = self.turn(phase, k)
        self.sessions[which] = (self.session_id, self.transcript)
        return duration

    def run_interleave(self, sizes: list[int]) -> None:
        """Two sessions in one HOME, measured turns alternating between them (see the module doc)."""
        n, seeds = self.args.turns, 3
        self.sessions = {"fresh": (None, None), "big": (None, None)}
        print(
            f"[interleave] {seeds} unmeasured turns in the fresh session (the turn shape to clone), one in the session to grow ...",
            flush=True,
        )
        for k in range(1, seeds + 1):
            self.turn_on("fresh", "seed-fresh", k)
        self.turn_on("big", "seed-big", 1)
        fresh_sid, fresh_path = self.sessions["fresh"]
        templates = split_runs(fresh_path.read_bytes().splitlines())[1:]  # later runs: the steady-state shape
        self.results["interleave"] = {}
        for size in sizes:
            big_phase, fresh_phase = f"{size}MB", f"fresh@{size}MB"
            big_sid, big_path = self.sessions["big"]
            t0 = time.monotonic()
            cloned = grow_transcript(big_path, templates, big_sid, size * MB, source_session_id=fresh_sid)
            grow_s = round(time.monotonic() - t0, 1)
            print(
                f"[{big_phase}] grew the second session to {big_path.stat().st_size / MB:.1f} MB with {cloned} cloned turns;"
                " one unmeasured catch-up turn ...",
                flush=True,
            )
            catchup_s = round(self.turn_on("big", big_phase + "-catchup", 0), 2)
            drain_s = round(self.wait_drained(self.args.drain_timeout), 1)
            infos = {}
            for which, _phase in (("fresh", fresh_phase), ("big", big_phase)):
                infos[which] = {
                    "turns": n,
                    "interleaved": True,
                    "load_before": loadavg(),
                    "size_start_mb": round(self.sessions[which][1].stat().st_size / MB, 2),
                }
            infos["big"].update({"cloned_turns": cloned, "grow_s": grow_s, "catchup_cli_s": catchup_s, "catchup_drain_s": drain_s})
            print(f"[{big_phase}] {n} measured turns in each session, alternating fresh, big, fresh, big ...", flush=True)
            cli = {"fresh": [], "big": []}
            for k in range(1, n + 1):
                cli["fresh"].append(self.turn_on("fresh", fresh_phase, k))
                if k == n:
                    self.snapshot_state(big_phase)
                cli["big"].append(self.turn_on("big", big_phase, k))
            for which, phase in (("fresh", fresh_phase), ("big", big_phase)):
                infos[which].update(
                    {
                        "cli_run_s_median": round(statistics.median(cli[which]), 2),
                        "load_after": loadavg(),
                        "size_end_mb": round(self.sessions[which][1].stat().st_size / MB, 2),
                    }
                )
                self.results["phases"][phase] = infos[which]
            self.results["interleave"][big_phase] = {"fresh_phase": fresh_phase, "big_phase": big_phase}
            # the replays read self.session_id / self.transcript: the big session's last Stop
            self.session_id, self.transcript = self.sessions["big"]
            self.measure_rss(big_phase)
            if size == sizes[-1]:
                self.measure_first_sight(big_phase)

    def pair_stats(self) -> None:
        """--interleave, after collect(): medians, their growth, and the per-pair differences."""
        by_phase: dict[str, dict[int, float]] = {}
        for t in self.measured:
            if "summary" in t:
                by_phase.setdefault(t["phase_k"][0], {})[t["phase_k"][1]] = t["summary"]["durationMs"]
        for info in self.results.get("interleave", {}).values():
            fresh, big = by_phase.get(info["fresh_phase"], {}), by_phase.get(info["big_phase"], {})
            diffs = [big[k] - fresh[k] for k in sorted(fresh) if k in big]
            fm = self.results["phases"][info["fresh_phase"]]["hook_ms"]["median"]
            bm = self.results["phases"][info["big_phase"]]["hook_ms"]["median"]
            info.update(
                {
                    "fresh_median_ms": fm,
                    "big_median_ms": bm,
                    "median_growth_pct": round((bm - fm) / fm * 100, 1) if fm and bm is not None else None,
                    "pairs": len(diffs),
                    "pair_diff_ms": diffs,
                    "pair_diff_median_ms": statistics.median(diffs) if diffs else None,
                    "pair_diff_ratio_pct": round(statistics.median(diffs) / fm * 100, 1) if diffs and fm else None,
                    "pairs_big_slower": sum(1 for d in diffs if d > 0),
                }
            )

    def run_baseline(self, turns: int) -> None:
        """Claude Code's durationMs for a hook that does nothing (`<python> -c pass`), in its own HOME:
        the floor any Python hook pays here (process start-up as the CLI spawns it)."""
        home = self.work / "home-baseline"
        (home / ".claude").mkdir(parents=True)
        command = hook_command(self.hook_argv[0], "-c", "pass")
        write_hook_settings(home, {"Stop": [command]})
        session, durs = None, []
        print(f"[baseline] {turns} turns with a do-nothing Python Stop hook ...", flush=True)
        for k in range(1, turns + 1):
            run = run_claude(
                home,
                self.project,
                f"baseline {k}: run the check",
                turn_script("baseline", k),
                resume=session,
                claude=self.claude,
                timeout=300,
            )
            session = run.session_id
        for row in read_jsonl(run.transcript):
            if row.get("type") == "system" and row.get("subtype") == "stop_hook_summary":
                durs += [h["durationMs"] for h in row.get("hookInfos") or [] if h.get("command") == command]
        self.results["baseline_python_pass_hook_ms"] = {
            "n": len(durs),
            "median": statistics.median(durs) if durs else None,
            "max": max(durs) if durs else None,
            "command": command,
        }

    # -- reading back what Claude Code recorded
    def collect(self) -> None:
        sessions = list(self.sessions.values()) or [(self.session_id, self.transcript)]
        turns_all: list[dict] = []
        for session_id, transcript in sessions:
            by_prompt: dict[str, dict] = {}
            current = None
            for row in read_jsonl(transcript):
                if row.get("type") == "user" and isinstance(row.get("message", {}).get("content"), str):
                    text = row["message"]["content"]
                    # cloned turns repeat the fresh phase's prompt texts: only the first one is measured
                    if text in self.prompts and text not in by_prompt:
                        current = {"prompt_id": row.get("promptId") or row["uuid"], "phase_k": self.prompts[text], "session_id": session_id}
                        by_prompt[text] = current
                    elif row.get("promptId") and not row.get("isMeta"):
                        current = None
                elif row.get("type") == "system" and row.get("subtype") == "stop_hook_summary" and current and "summary" not in current:
                    mine = [h for h in row.get("hookInfos") or [] if h.get("command") == self.command]
                    if mine:
                        current["summary"] = {"timestamp": row["timestamp"], "durationMs": mine[0]["durationMs"]}
                        floor = [h for h in row.get("hookInfos") or [] if self.floor_command and h.get("command") == self.floor_command]
                        if floor:
                            current["floor_ms"] = floor[0]["durationMs"]
            turns_all += by_prompt.values()
        self.measured = turns_all
        phases = set(self.results["phases"]) | {p + "-catchup" for p in self.results["phases"]}
        deadline = time.monotonic() + self.args.drain_timeout
        measured = [t for t in turns_all if "summary" in t and t["phase_k"][0] in phases]
        while True:
            self.standin.poll()
            missing = [t for t in measured if trace_id_for(t["session_id"], t["prompt_id"]) not in self.standin.first_root_arrival]
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        for phase, info in self.results["phases"].items():
            turns = [t for t in turns_all if t["phase_k"][0] == phase]
            durs = [t["summary"]["durationMs"] for t in turns if "summary" in t]
            lat = []
            for t in turns:
                arrival = self.standin.first_root_arrival.get(trace_id_for(t["session_id"], t["prompt_id"]))
                if "summary" in t and arrival is not None:
                    start = parse_ts(t["summary"]["timestamp"]) - t["summary"]["durationMs"] / 1000
                    lat.append(arrival - start)
            info["hook_ms"] = {
                "n": len(durs),
                "median": statistics.median(durs) if durs else None,
                "max": max(durs) if durs else None,
                "min": min(durs) if durs else None,
                "all": durs,
            }
            floors = [t["floor_ms"] for t in turns if "floor_ms" in t]
            if floors:
                info["floor_hook_ms"] = {"n": len(floors), "median": statistics.median(floors), "all": floors}
                print(f"  {phase}: do-nothing Stop hook beside ours, median {statistics.median(floors):.1f} ms (n={len(floors)})")
            info["stop_to_standin_s"] = {
                "n": len(lat),
                "of": len(turns),
                "p50": round(percentile(lat, 50), 3) if lat else None,
                "p95": round(percentile(lat, 95), 3) if lat else None,
                "max": round(max(lat), 3) if lat else None,
            }
            catch = [t for t in turns_all if t["phase_k"][0] == phase + "-catchup" and "summary" in t]
            if catch:
                info["catchup_hook_ms"] = catch[0]["summary"]["durationMs"]

    # -- peak RSS of the hook process on the same events
    def stop_event_for_last_turn(self) -> tuple[dict, int]:
        """The Stop event of the transcript's last turn, and the byte offset of the turn before it."""
        offsets, rows, pos = [], [], 0
        with open(self.transcript, "rb") as fh:
            for raw in fh:
                row = json.loads(raw)
                if row.get("type") == "user" and isinstance(row.get("message", {}).get("content"), str) and row.get("promptId"):
                    offsets.append((pos, row))
                pos += len(raw)
                if row.get("type") == "assistant":
                    rows.append(row)
        last_prompt = offsets[-1][1]
        last_text = next((b.get("text") for r in reversed(rows) for b in r["message"]["content"] if b.get("type") == "text"), "")
        event = {
            "session_id": self.session_id,
            "transcript_path": str(self.transcript),
            "cwd": str(self.project),
            "prompt_id": last_prompt["promptId"],
            "permission_mode": "default",
            "hook_event_name": "Stop",
            "stop_hook_active": False,
            "last_assistant_message": last_text,
            "background_tasks": [],
            "session_crons": [],
        }
        return event, offsets[-2][0] if len(offsets) > 1 else 0

    def replay(self, event: dict, state_dir: pathlib.Path, repeats: int) -> dict:  # noqa: C901
        """Run the hook on `event` under a wrapper that reports the child's peak RSS and wall time.

        A fresh wrapper per run, so RUSAGE_CHILDREN holds exactly one hook process. The state
        dir is restored before every run so each run does the same work. The sender the hook
        starts is pointed at a closed port: it exits at once and sends nothing twice."""
        wrapper = (
            "import resource, subprocess, sys, time, json\n"
            "t = time.monotonic()\n"
            "subprocess.run(sys.argv[1:], stdin=sys.stdin, check=False)\n"
            "wall = time.monotonic() - t\n"
            "print(json.dumps({'maxrss_kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, 'wall_s': wall}))\n"
        )
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(self.home),
            "CC_LANGFUSE_STATE_DIR": str(state_dir),
            "CC_LANGFUSE_BASE_URL": "http://127.0.0.1:9",
        }
        pristine = state_dir.with_name(state_dir.name + ".pristine")
        shutil.copytree(state_dir, pristine)
        # a sender backing off: the replayed hook queues as live but starts no sender, so nothing
        # keeps writing into the folder between repeats, and the RSS is the hook's alone
        (pristine / "langfuse_sender.json").write_text(json.dumps({"next_attempt_epoch": time.time() + 3600}))
        out = []
        for _ in range(repeats):
            remove_tree(state_dir)  # the previous run's sender may still be writing its log there
            shutil.copytree(pristine, state_dir)
            proc = subprocess.run(
                [self.python, "-c", wrapper] + self.hook_argv, input=json.dumps(event).encode(), capture_output=True, env=env, timeout=600
            )
            out.append(json.loads(proc.stdout))
        return {
            "peak_rss_mb": round(max(o["maxrss_kb"] for o in out) / 1024, 1),
            "wall_ms_median": round(statistics.median(o["wall_s"] for o in out) * 1000, 1),
            "runs": len(out),
            "event": {k: event[k] for k in ("hook_event_name", "prompt_id")},
        }

    def snapshot_state(self, phase: str) -> None:
        """The hook's state as the next Stop will find it (nothing runs the hook between -p runs)."""
        snap = self.work / f"replay-{phase}"
        shutil.copytree(self.state_dir, snap, ignore=shutil.ignore_patterns("locks"))
        for name in ("pending_traces.jsonl", "dead_traces.jsonl", "langfuse_hook.log", "langfuse_sender.json"):
            (snap / name).unlink(missing_ok=True)

    def measure_rss(self, phase: str) -> None:
        """The phase's last Stop replayed on the state snapshot taken just before it: same bytes read, same record queued."""
        event, _ = self.stop_event_for_last_turn()
        self.results["phases"][phase]["hook_replay"] = self.replay(event, self.work / f"replay-{phase}", self.args.rss_repeats)

    def measure_first_sight(self, phase: str) -> None:
        """The hook's worst case: the first Stop of a hook installed mid-session (empty state, whole file)."""
        event, _ = self.stop_event_for_last_turn()
        replay_dir = self.work / f"replay-{phase}-first-sight"
        replay_dir.mkdir(mode=0o700)
        res = self.replay(event, replay_dir, 1)
        res["transcript_mb"] = round(self.transcript.stat().st_size / MB, 1)
        self.results["phases"][phase]["hook_first_sight"] = res

    # -- when the median misses the target: where the time goes
    def diagnose(self) -> None:
        event, previous_offset = self.stop_event_for_last_turn()
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(self.home),
            "CC_LANGFUSE_STATE_DIR": str(self.work / "diag-state"),
            "CC_LANGFUSE_BASE_URL": "http://127.0.0.1:9",
        }
        (self.work / "diag-state").mkdir(mode=0o700, exist_ok=True)
        data = json.dumps(event).encode()
        # the interpreter and the copy of the hook that Claude Code runs
        py = self.hook_argv[0]
        hook_file = self.home / ".claude" / "langfuse" / "langfuse_hook.py" if self.args.install == "installer" else HOOK

        def wall(argv, runs=15, stdin=b""):
            times = []
            for _ in range(runs):
                t = time.monotonic()
                subprocess.run(argv, input=stdin, capture_output=True, env=env, timeout=600)
                times.append((time.monotonic() - t) * 1000)
            return round(statistics.median(times), 1)

        harness = (
            "import json, sys, time\n"
            "t0 = time.perf_counter()\n"
            "src = open(sys.argv[1], 'rb').read()\n"
            "compile(src, sys.argv[1], 'exec')\n"
            "t1 = time.perf_counter()\n"
            "sys.path.insert(0, sys.argv[2])\n"
            "import langfuse_hook\n"
            "t2 = time.perf_counter()\n"
            "sys.argv = [sys.argv[1]]\n"
            "langfuse_hook.main()\n"
            "t3 = time.perf_counter()\n"
            "sys.stderr.write(json.dumps({'compile_ms': (t1 - t0) * 1000, 'import_pyc_ms': (t2 - t1) * 1000, 'run_ms': (t3 - t2) * 1000}))\n"
        )
        wall(self.hook_argv, runs=1, stdin=data)  # first sight of the file: later runs are steady state
        parts = []
        for _ in range(10):
            proc = subprocess.run(
                [py, "-c", harness, str(hook_file), str(hook_file.parent)], input=data, capture_output=True, env=env, timeout=600
            )
            parts.append(json.loads(proc.stderr.decode().strip().splitlines()[-1]))
        diag = {
            "python_startup_ms": wall([py, "-c", "pass"]),
            "python_startup_no_site_ms": wall([py, "-S", "-c", "pass"]),
            "hook_run_as_script_ms": wall([py, str(hook_file)], stdin=data),
            "hook_run_as_registered_ms": wall(self.hook_argv, stdin=data),
            "hook_run_via_cached_import_ms": wall(
                [
                    py,
                    "-c",
                    "import sys; sys.path.insert(0, %r); sys.argv = [%r]; "
                    "import langfuse_hook; langfuse_hook.main()" % (str(hook_file.parent), str(hook_file)),
                ],
                stdin=data,
            ),
            "in_process_ms": {k: round(statistics.median(p[k] for p in parts), 1) for k in parts[0]},
        }
        proc = subprocess.run(
            [py, "-X", "importtime", "-c", "import sys; sys.path.insert(0, %r); import langfuse_hook" % str(hook_file.parent)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        imports = []
        for line in proc.stderr.splitlines():
            m = re.match(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)", line)
            if m:
                imports.append(
                    {"self_us": int(m.group(1)), "cumulative_us": int(m.group(2)), "depth": len(m.group(3)) // 2, "module": m.group(4)}
                )
        diag["importtime_top"] = sorted((i for i in imports if i["depth"] <= 1), key=lambda i: -i["cumulative_us"])[:15]
        diag["importtime_total_ms"] = round(sum(i["self_us"] for i in imports) / 1000, 1)
        prof = self.work / "hook.prof"
        subprocess.run(
            [
                py,
                "-c",
                "import cProfile, sys; sys.path.insert(0, %r); sys.argv = [%r]; import langfuse_hook; "
                "cProfile.run('langfuse_hook.main()', %r)" % (str(hook_file.parent), str(hook_file), str(prof)),
            ],
            input=data,
            capture_output=True,
            env=env,
            timeout=600,
        )
        stats = subprocess.run(
            [self.python, "-c", "import pstats, sys; pstats.Stats(sys.argv[1]).sort_stats('cumulative').print_stats(25)", str(prof)],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        diag["cprofile_top_cumulative"] = stats.strip().splitlines()[-30:]
        self.results["diagnosis"] = diag

    def close(self) -> None:
        self.standin.stop()
        if not self.args.keep:
            shutil.rmtree(self.work, ignore_errors=True)


# ------------------------------------------------------------------------------ report


def verdicts(results: dict) -> list[tuple[str, str, str, bool | None]]:
    phases = results["phases"]
    rows = []
    fresh = phases.get("fresh", {}).get("hook_ms", {}).get("median")
    for name, info in phases.items():
        med = info["hook_ms"]["median"]
        rows.append(
            (
                f"hook duration median, {name}",
                f"{med} ms (max {info['hook_ms']['max']})",
                f"<= {TARGETS['hook_median_ms']} ms",
                med is not None and med <= TARGETS["hook_median_ms"],
            )
        )
        if name != "fresh" and fresh:
            growth = (med - fresh) / fresh * 100
            rows.append(
                (
                    f"median growth fresh -> {name}",
                    f"{growth:+.1f} %",
                    f"<= {TARGETS['median_growth_pct']} %",
                    growth <= TARGETS["median_growth_pct"],
                )
            )
        lat = info["stop_to_standin_s"]
        rows.append(
            (
                f"Stop -> stand-in, {name}",
                f"p50 {lat['p50']} s, p95 {lat['p95']} s ({lat['n']}/{lat['of']} turns)",
                f"p95 <= {TARGETS['stop_to_standin_p95_s']} s",
                lat["p95"] is not None and lat["p95"] <= TARGETS["stop_to_standin_p95_s"] and lat["n"] == lat["of"],
            )
        )
        rep = info.get("hook_replay")
        if rep:
            rows.append(
                (
                    f"hook peak RSS, {name} (replayed Stop)",
                    f"{rep['peak_rss_mb']} MB (wall {rep['wall_ms_median']} ms)",
                    f"<= {TARGETS['hook_peak_rss_mb']} MB",
                    rep["peak_rss_mb"] <= TARGETS["hook_peak_rss_mb"],
                )
            )
        first = info.get("hook_first_sight")
        if first:
            rows.append(
                (
                    f"hook first sight of {first['transcript_mb']} MB (empty state)",
                    f"{first['peak_rss_mb']} MB RSS, {first['wall_ms_median']} ms",
                    "(info)",
                    None,
                )
            )
        if "catchup_hook_ms" in info:
            rows.append((f"catch-up Stop after growth, {name}", f"{info['catchup_hook_ms']} ms (Claude Code's durationMs)", "(info)", None))
    for name, pair in results.get("interleave", {}).items():
        growth = pair.get("median_growth_pct")
        rows.append(
            (
                f"median growth fresh -> {name} (interleaved)",
                f"{growth:+.1f} % ({pair['fresh_median_ms']} -> {pair['big_median_ms']} ms)" if growth is not None else "n/a",
                f"<= {TARGETS['median_growth_pct']} %",
                growth is not None and growth <= TARGETS["median_growth_pct"],
            )
        )
        ratio = pair.get("pair_diff_ratio_pct")
        rows.append(
            (
                f"paired difference {name} - fresh, median",
                f"{pair['pair_diff_median_ms']:+} ms = {ratio:+.1f} % of fresh median ({pair['pairs']} pairs,"
                f" big slower in {pair['pairs_big_slower']})"
                if ratio is not None
                else "n/a",
                f"<= {TARGETS['median_growth_pct']} %",
                ratio is not None and ratio <= TARGETS["median_growth_pct"],
            )
        )
    return rows


def print_table(results: dict) -> None:
    rows = verdicts(results)
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    print()
    print(f"{'measure':<{w0}}  {'measured':<{w1}}  {'target':<16} verdict")
    for name, value, target, ok in rows:
        print(f"{name:<{w0}}  {value:<{w1}}  {target:<16} {'-' if ok is None else 'PASS' if ok else 'MISS'}")
    for phase, info in results["phases"].items():
        print(
            f"  {phase}: transcript {info['size_start_mb']} -> {info['size_end_mb']} MB, claude -p median {info['cli_run_s_median']} s,"
            f" load {info['load_before']} -> {info['load_after']}"
        )
    base = results.get("baseline_python_pass_hook_ms")
    if base:
        print(f"  floor: a do-nothing hook `{base['command']}` takes median {base['median']} ms (max {base['max']}) in Claude Code here")
    diag = results.get("diagnosis")
    if diag:
        print("\nwhere a hook run's time goes (median wall ms, outside Claude Code):")
        for k in (
            "python_startup_ms",
            "python_startup_no_site_ms",
            "hook_run_as_script_ms",
            "hook_run_via_cached_import_ms",
            "hook_run_as_registered_ms",
        ):
            print(f"  {k:<30} {diag[k]}")
        print("  in one process: " + ", ".join(f"{k} {v}" for k, v in diag["in_process_ms"].items()))
        print(f"  imports (-X importtime, sum of self times): {diag['importtime_total_ms']} ms; top top-level imports:")
        for i in diag["importtime_top"][:10]:
            print(f"    {i['cumulative_us'] / 1000:7.1f} ms  {i['module']}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=30, help="measured turns per phase (default 30)")
    parser.add_argument("--sizes", default="10,50", help="transcript sizes in MB after fresh (default 10,50)")
    parser.add_argument("--quick", action="store_true", help="8 turns per phase, 10 MB only (a ~3 min smoke run)")
    parser.add_argument(
        "--python",
        default=str(REPO / ".venv" / "bin" / "python"),
        help="interpreter in the hook command (default: the repo's .venv, which has the SDK for the sender)",
    )
    parser.add_argument(
        "--install",
        choices=("installer", "script"),
        default="installer",
        help="installer: as scripts/install-hook.sh registers it (`<venv python> -m langfuse_hook`, compiled); "
        "script: `<python> <repo>/hooks/langfuse_hook.py` (compiled from source on every run)",
    )
    parser.add_argument("--rss-repeats", type=int, default=5, help="replays per phase for the peak RSS (default 5)")
    parser.add_argument("--drain-timeout", type=float, default=300, help="seconds to wait for the sender (default 300)")
    parser.add_argument(
        "--diagnose",
        choices=("auto", "always", "never"),
        default="auto",
        help="import-time and cProfile breakdown: when the median misses the target (auto), always or never",
    )
    parser.add_argument(
        "--no-baseline", dest="baseline", action="store_false", help="skip the do-nothing Python hook turns that show the start-up floor"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary HOME, transcript and span record")
    parser.add_argument(
        "--floor-hook",
        action="store_true",
        help="also register a do-nothing Python Stop hook in the same sessions and report its durationMs "
        "(what the session and the CLI add to any hook)",
    )
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="robust growth under drift: a fresh and a grown session in one HOME, measured turns alternating "
        "between them; reports the medians and the median per-pair difference",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.turns, args.sizes, args.rss_repeats = min(args.turns, 8), "10", 3
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    args.phases = ([] if args.interleave else ["fresh"]) + [f"{s}MB" for s in sizes]
    started = time.time()
    bench = Bench(args)
    print(f"work dir {bench.work}; stand-in {bench.standin.base_url}; claude {bench.claude}", flush=True)
    try:
        bench.results["machine"] = machine_info(args.python, bench.claude)
        bench.results["command"] = " ".join([sys.executable] + sys.argv)
        bench.results["load_start"] = loadavg()
        if args.interleave:
            bench.run_interleave(sizes)
        else:
            bench.run_phase("fresh", None)
            for s in sizes:
                bench.run_phase(f"{s}MB", s)
        if args.baseline:
            bench.run_baseline(min(10, args.turns))
        bench.collect()
        bench.pair_stats()
        worst = max(info["hook_ms"]["median"] or 0 for info in bench.results["phases"].values())
        if args.diagnose == "always" or (args.diagnose == "auto" and worst > TARGETS["hook_median_ms"]):
            bench.diagnose()
        bench.results["load_end"] = loadavg()
        bench.results["elapsed_s"] = round(time.time() - started, 1)
        bench.results["verdicts"] = [{"measure": a, "measured": b, "target": c, "ok": d} for a, b, c, d in verdicts(bench.results)]
    finally:
        bench.close()
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / ("bench_hook-%s.json" % dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ"))
    out.write_text(json.dumps(bench.results, indent=1))
    print_table(bench.results)
    print(f"\n{bench.results['elapsed_s']} s; results in {out}" + (f"; work dir kept: {bench.work}" if args.keep else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
