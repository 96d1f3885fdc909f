#!/usr/bin/env python3
"""Benchmark of the hook as Claude Code runs it (by hand; never part of CI timing).

Drives the real Claude Code CLI (2.1.328) against the scripted Messages API
(tests/fake_messages_api.py); the Langfuse stand-in (tests/langfuse_standin.py --record) runs in
its own process on 127.0.0.1. Our hook is registered as the installer registers it (Stop,
SubagentStop, SessionEnd, StopFailure, and the async "fact" hooks PermissionRequest, PostToolUse,
PostToolUseFailure, SubagentStart, SessionStart), and a do-nothing Python hook
(`<same python> -I -c pass`) beside it in the same handler group of every measured event, async
where ours is: Claude Code starts both together for each event, so every figure of ours has a floor
measured on the same event, in the same run, under the same load. The verdict is the ratio
median(ours) / median(do-nothing) per event and scenario (target <= 1.5).

Variants (each in its own temporary HOME):
  cached       the package's bytecode cache is written (as the installer compiles it)
  no-bytecode  our hook registered with -B, and the package's __pycache__ replaced by a plain file,
               so neither the hook nor the worker it starts can write or read a cache: every event
               compiles each package module it imports from source. The do-nothing hook gets -B too.
               The worst case.
  readonly-precompiled  the package compiled as the installer does, then made read-only (chmod a-w;
               as root also chattr +i, since root ignores mode bits), our hook registered with -B:
               a user with PYTHONDONTWRITEBYTECODE=1 and a read-only plugin cache. The cache is read,
               never written (checked: the package is unchanged after the run). Do-nothing gets -B.
  old-cached, old-no-bytecode (opt-in)  the single-file hook of --old-rev (7a3d0d0, before the
               package), `PYTHONPATH=<dir> <python> [-B] -m langfuse_hook`, in the same run
The code measured is a `git archive` of --source (default HEAD), never the working tree.

Scenarios (each its own session):
  fresh      N turns of a new session (thinking, text, a Bash call, the answer; `--resume`)
  grown      a session grown by +20 MB of cloned CLI-written turns the hook never saw; the first
             Stop after the growth and the turns after it
  open       a turn whose lines total 25 MB before its Stop (its Bash call appends them to the open
             turn), and the next turn (whose worker re-reads the open turn once more)
  subagents  one prompt launching 10 background subagents: 10 SubagentStop events, then the Stops
             of the launch and task-notification turns
  facts      the async fact hooks: --fact-runs runs of one session (SessionStart: startup, then
             resume), each with Bash calls (PostToolUse), failing ones (PostToolUseFailure), Writes
             that -p denies (Write is not in --allowedTools: PermissionRequest) and background
             subagents (SubagentStart; their Bash calls and the Agent launch: PostToolUse)

Where each duration comes from (no wrapper around any hook):
  Stop          Claude Code's `system/stop_hook_summary` -> hookInfos[].durationMs
  SubagentStop  Claude Code's debug log (`--debug-file`): "Hooks: SubagentStop [<command>] finished
                with status 0 (N ms)", the same timer as durationMs (it writes no summary row)
  SessionEnd    Claude Code logs only the end of a SessionEnd hook, so its duration is the life of
                the hook's `/bin/sh -c <command>` process from the kernel's own fork and exit events
                (netlink proc connector, CLOCK_MONOTONIC ns; needs root), for ours and the floor
                alike. Checked against durationMs on Stop, where both exist.
  fact events   async: nothing waits for them and Claude Code records no duration; measured as
                SessionEnd is. The kernel sees only `/bin/sh -c <command>`, so each fact event's
                command (ours and the do-nothing one) ends in a shell comment naming the event
                (`... # PostToolUse`); a process ended by a signal (shutdown SIGTERM) is counted, not
                timed. Fact events fire in every scenario (SessionStart on each run, PostToolUse on
                each Bash call) and are reported wherever they do.
  Stop -> stand-in  the stand-in's `received_at` of the turn's root span minus the hook's start
                (summary timestamp - durationMs)

    .venv/bin/python bench/bench_hook.py                      # three variants, all scenarios: ~10 min on 2 cores
    .venv/bin/python bench/bench_hook.py --quick              # ~2 min
    .venv/bin/python bench/bench_hook.py --variants cached,no-bytecode,old-cached,old-no-bytecode   # + the single-file hook: 10-18 min
    .venv/bin/python bench/bench_hook.py --append-open-turn PATH MB   (internal: the open turn's Bash call)

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
import select
import shlex
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tests"), str(REPO / "hooks")]

HOOK = REPO / "hooks" / "langfuse_hook.py"
PACKAGE = REPO / "hooks" / "claude_code_langfuse"
STANDIN = REPO / "tests" / "langfuse_standin.py"
RESULTS = REPO / "bench" / "results"
MB = 1024 * 1024
EVENTS = ("Stop", "SubagentStop", "SessionEnd")
# the installer's async "fact" hooks (scripts/settings_merge.py ASYNC_EVENTS): nothing waits for them,
# Claude Code writes no duration for them; measured as SessionEnd is (the kernel's fork -> exit)
FACT_EVENTS = ("PermissionRequest", "PostToolUse", "PostToolUseFailure", "SubagentStart", "SessionStart")
VARIANTS = ("cached", "no-bytecode", "readonly-precompiled")
OLD_VARIANTS = ("old-cached", "old-no-bytecode")  # the single-file hook before the package, same runs
OLD_REV = "7a3d0d0"  # the last commit of the single-file hook
SCENARIOS = ("fresh", "grown", "open", "subagents", "facts")

TARGETS = {"ratio_to_floor": 1.5, "stop_to_standin_p95_s": 2.0}
# The old single-process hook (before the claude_code_langfuse package), as the issue measured it.
BEFORE = {
    "stop_cached": "64 ms vs 22 ms do-nothing (2.9x)",
    "stop_no_bytecode": "133 ms vs 22 ms do-nothing (6.0x)",
    "first_stop_after_20mb": "833 ms",
    "open_turn_25mb": "0.26 s on every Stop",
}

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
API_ID_RE = re.compile(r"\b(msg|toolu|req|srvtoolu)_[A-Za-z0-9]+")
SUBAGENT_LINE_RE = re.compile(r"Hooks: (\w+) \[(.*)\] finished with status (\d+) \((\d+)ms\)$")


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


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def parse_ts(value: str) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def trace_id_for(session_id: str, turn_key: str) -> str:
    # design.md: trace_id = sha256("<session_id>:<turn key>")[:32]
    return hashlib.sha256(f"{session_id}:{turn_key}".encode()).hexdigest()[:32]


def export_source(rev: str, dest: pathlib.Path) -> pathlib.Path:
    """The tree of commit `rev` (`git archive`), so that a run measures committed code, never a
    working tree that someone is editing; "worktree" uses the working tree as it is."""
    if rev == "worktree":
        return REPO
    import io
    import tarfile

    data = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", rev], check=True, capture_output=True).stdout
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")
    return dest


def git_rev(rev: str) -> str:
    if rev == "worktree":
        return "worktree"
    return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", rev], capture_output=True, text=True).stdout.strip()


def machine_info(python: str, claude: str | None, src: pathlib.Path = REPO) -> dict:
    def out(argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    cpu = mem = ""
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
        mem = next(("%.1f GiB" % (int(line.split()[1]) / 1048576) for line in open("/proc/meminfo") if line.startswith("MemTotal")), "")
    except OSError:
        pass
    digest = hashlib.sha256()
    for path in sorted([src / "hooks" / HOOK.name, *(src / "hooks" / PACKAGE.name).glob("*.py")]):
        digest.update(path.read_bytes())
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "mem_total": mem,
        "kernel": platform.release(),
        "python": out([python, "--version"]),
        "claude": out([claude, "--version"]) if claude else "",
        "hook_sources_sha256": digest.hexdigest()[:16],
        "git_head": out(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
    }


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def worker_busy(state_dir: pathlib.Path) -> bool:
    """Does a worker (or `drain`; or the old hook's sender) of this state folder hold its lock right now?"""
    import fcntl

    for name in ("worker.lock", "sender.lock"):
        lock = state_dir / "locks" / name
        if not lock.exists():
            continue
        with open(lock, "rb") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fh, fcntl.LOCK_UN)
            except OSError:
                return True
    return False


sender_busy = worker_busy  # the name bench_backfill.py used before the worker


def wait_worker_idle(state_dir: pathlib.Path, timeout: float = 60) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout and worker_busy(state_dir):
        time.sleep(0.1)
    return time.monotonic() - t0


def remove_tree(path: pathlib.Path, wait_s: float = 10.0) -> None:
    """rmtree that waits out a detached worker still finishing in the folder."""
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


def installer_async_events(src: pathlib.Path) -> tuple[str, ...]:
    """ASYNC_EVENTS of the measured source's installer (scripts/settings_merge.py), read without importing it."""
    import ast

    tree = ast.parse((src / "scripts" / "settings_merge.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "ASYNC_EVENTS" for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    return ()


def tree_state(folder: pathlib.Path) -> dict[str, list[int]]:
    """Every file and folder under `folder` with its size and mtime (ns): did anything write there?"""
    out = {}
    for path in sorted([folder, *folder.rglob("*")]):
        st = path.lstat()
        out[str(path.relative_to(folder))] = [st.st_size, st.st_mtime_ns]
    return out


def make_read_only(package: pathlib.Path) -> dict:
    """The readonly-precompiled variant: the compiled package (and its __pycache__) made read-only,
    as a read-only plugin cache or a root-owned install is for the user who runs the hook.
    chmod a-w; running as root, which ignores mode bits (os.access(W_OK) would still say yes), also
    `chattr +i` (immutable, root included; os.access then says no, as for a user facing a-w)
    where the file system has it. undo_read_only() puts it back."""
    for path in [package, *package.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)
    immutable = False
    if os.geteuid() == 0 and shutil.which("chattr"):
        immutable = subprocess.run(["chattr", "-R", "+i", str(package)], capture_output=True).returncode == 0
    return {
        "chmod_a_w": True,
        "immutable": immutable,
        "pyc_files": len(list((package / "__pycache__").glob("*.pyc"))),
        "state_before": tree_state(package),
    }


def undo_read_only(package: pathlib.Path) -> None:
    if shutil.which("chattr"):
        subprocess.run(["chattr", "-R", "-i", str(package)], capture_output=True)
    for path in [package, *package.rglob("*")]:
        try:
            path.chmod(path.stat().st_mode | 0o200)
        except OSError:
            pass


# ------------------------------------------------------------------------------ kernel process events


class ProcWatch:
    """Fork, exec and exit of every process, with the kernel's CLOCK_MONOTONIC ns, through the netlink
    proc connector (root only). Keeps the processes whose argv `match` labels (read at exec)."""

    FORK, EXEC, EXIT = 0x1, 0x2, 0x80000000

    def __init__(self, match):
        self.match = match
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 11)  # NETLINK_CONNECTOR
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind((0, 1))  # CN_IDX_PROC
        payload = struct.pack("=I", 1)  # PROC_CN_MCAST_LISTEN
        cn_msg = struct.pack("=IIIIHH", 1, 1, 0, 0, len(payload), 0) + payload
        self.sock.send(struct.pack("=IHHII", 16 + len(cn_msg), 3, 0, 0, 0) + cn_msg)  # NLMSG_DONE
        self.forks: dict[int, int] = {}
        self.procs: dict[int, dict] = {}
        self.errors = 0
        self.lock = threading.Lock()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="procwatch", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping:
            if not select.select([self.sock], [], [], 0.2)[0]:
                continue
            try:
                data = self.sock.recv(65536)
            except OSError:  # ENOBUFS: events were dropped
                self.errors += 1
                continue
            off = 0
            while off + 52 <= len(data):
                length = struct.unpack_from("=I", data, off)[0]
                if length < 16:
                    break
                self._event(data[off : off + length])
                off += (length + 3) & ~3

    def _event(self, msg: bytes) -> None:
        if len(msg) < 64:
            return
        what, _cpu, ts = struct.unpack_from("=IIQ", msg, 36)
        if what == self.FORK:
            _ppid, _ptgid, pid, tgid = struct.unpack_from("=IIII", msg, 52)
            if pid == tgid:
                if len(self.forks) > 200_000:
                    self.forks.clear()
                self.forks[pid] = ts
        elif what == self.EXEC:
            pid = struct.unpack_from("=I", msg, 52)[0]
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    argv = [a.decode("utf-8", "replace") for a in fh.read().split(b"\0")[:-1]]
            except OSError:
                return
            label = self.match(argv)
            if label is not None and pid not in self.procs:
                with self.lock:
                    self.procs[pid] = {"label": label, "fork_ns": self.forks.get(pid), "exec_ns": ts, "exit_ns": None, "signal": None}
        elif what == self.EXIT:
            pid, tgid, code = struct.unpack_from("=III", msg, 52)
            proc = self.procs.get(pid)
            if pid == tgid and proc is not None and proc["exit_ns"] is None:
                proc["exit_ns"] = ts
                proc["signal"] = code & 0x7F  # wait status: the signal that ended it, 0 if it exited

    def lives(self, label: str, start_ns: int, end_ns: int, running: bool = False) -> list[dict]:
        """Processes of `label` forked in [start_ns, end_ns], oldest first, with their life in ms
        (running: also those that have not exited, with ms None)."""
        with self.lock:
            procs = [dict(p) for p in self.procs.values() if p["label"] == label]
        out = []
        for p in procs:
            begin = p["fork_ns"] or p["exec_ns"]
            if start_ns <= begin <= end_ns and (p["exit_ns"] or running):
                life = round((p["exit_ns"] - begin) / 1e6, 1) if p["exit_ns"] else None
                out.append({"start_ns": begin, "end_ns": p["exit_ns"], "ms": life, "signal": p["signal"]})
        return sorted(out, key=lambda p: p["start_ns"])

    def close(self) -> None:
        self.stopping = True
        self.thread.join(timeout=2)
        self.sock.close()


# ------------------------------------------------------------------------------ stand-in process


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


def tool_output(k: int, size: int) -> str:
    """`size` characters of ordinary program output (file listings and code), different per k."""
    lines, n, i = [], 0, 0
    while n < size:
        line = f"src/pkg_{(k * 7 + i) % 97}/module_{i}.py:{i % 400 + 1}: def handle_{k}_{i}(request): return render(request, 'p{i}.html')\n"
        lines.append(line)
        n += len(line)
        i += 1
    return "".join(lines)[:size]


def append_open_turn(transcript: str, megabytes: float, result_kb: int = 48) -> int:
    """Run from inside a turn (its Bash call): append `megabytes` of tool calls and results to the
    OPEN turn, the one whose Bash call is running: same promptId, a parentUuid chain that branches
    off the Bash call (Claude Code's own chain, and so --resume, are untouched). Returns the bytes added."""
    rows = [json.loads(line) for line in open(transcript, "rb") if line.strip()]
    prompt_id = next(
        r["promptId"]
        for r in reversed(rows)
        if r.get("type") == "user" and r.get("promptId") and isinstance(r["message"].get("content"), str)
    )
    parent = next(r["uuid"] for r in reversed(rows) if r.get("type") == "assistant")
    call_t = next(r for r in rows if r.get("type") == "assistant" and any(b.get("type") == "tool_use" for b in r["message"]["content"]))
    result_t = next(
        r
        for r in rows
        if r.get("type") == "user"
        and isinstance(r["message"].get("content"), list)
        and any(b.get("type") == "tool_result" for b in r["message"]["content"])
    )
    added, k, target = 0, 0, int(megabytes * MB)
    with open(transcript, "ab") as fh:
        while added < target:
            now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            tool_id = "toolu_bench" + secrets.token_hex(10)
            call = json.loads(json.dumps(call_t))
            call.update(uuid=str(uuid.uuid4()), parentUuid=parent, promptId=prompt_id, timestamp=now)
            # no requestRef: it would name the template's api-request line, which lies in another turn
            call.pop("requestRef", None)
            call["requestId"] = "req_bench" + secrets.token_hex(10)
            call["message"]["id"] = "msg_bench" + secrets.token_hex(10)
            call["message"]["content"] = [
                {
                    "type": "tool_use",
                    "id": tool_id,
                    "name": "Bash",
                    "input": {"command": f"cat notes/part_{k}.txt", "description": f"part {k}"},
                }
            ]
            output = tool_output(k, result_kb * 1024)
            res = json.loads(json.dumps(result_t))
            res.update(
                uuid=str(uuid.uuid4()), parentUuid=call["uuid"], promptId=prompt_id, timestamp=now, sourceToolAssistantUUID=call["uuid"]
            )
            res["message"]["content"] = [{"type": "tool_result", "tool_use_id": tool_id, "content": output, "is_error": False}]
            res["toolUseResult"] = {"stdout": output, "stderr": "", "interrupted": False, "isImage": False}
            chunk = (json.dumps(call) + "\n" + json.dumps(res) + "\n").encode()
            fh.write(chunk)
            added += len(chunk)
            parent, k = res["uuid"], k + 1
    return added


# ------------------------------------------------------------------------------ the scripted turns


def turn_script(phase: str, k: int) -> list:
    """One realistic turn: thinking + text + a Bash call, then the answer (two API calls)."""
    from fake_messages_api import reply, thinking, tool_use

    return [
        reply(
            thinking(f"The user wants the {phase} check #{k}; running it is the quickest way."),
            "Let me run the check.",
            tool_use("Bash", {"command": f"echo check {phase} {k}"}),
            message_id="msg_bench" + secrets.token_hex(10),
        ),
        reply(f"The check printed `check {phase} {k}`. All good.", message_id="msg_bench" + secrets.token_hex(10)),
    ]


def open_turn_script(python: str, transcript: pathlib.Path, megabytes: float, k: int) -> list:
    from fake_messages_api import reply, tool_use

    command = shlex.join([python, str(pathlib.Path(__file__).resolve()), "--append-open-turn", str(transcript), str(megabytes)])
    return [
        reply("Collecting the notes.", tool_use("Bash", {"command": command, "description": "collect notes"})),
        reply(f"Collected the notes ({megabytes:g} MB) #{k}."),
    ]


def subagents_script(n: int, k: int):
    from fake_messages_api import Script, reply, tool_use

    calls = [
        tool_use("Agent", {"description": f"part {i}", "prompt": f"SUBTASK-{k}-{i}: check part {i}", "subagent_type": "general-purpose"})
        for i in range(n)
    ]
    # the launch turn, then one answer per task-notification turn (unused ones are fine)
    return Script(
        main=[reply(f"Splitting the check into {n} parts.", *calls), reply("Launched; waiting.")]
        + [reply(f"Noted part results ({j}).") for j in range(n + 2)],
        agents={f"SUBTASK-{k}-{i}": [reply(f"Part {i} is fine.")] for i in range(n)},
    )


def facts_script(project: pathlib.Path, k: int, bash_ok: int, bash_fail: int, writes: int, agents: int):
    """One prompt that makes every async fact hook fire, one tool call per API reply (a failing Bash
    in a parallel batch would cancel its siblings): `bash_ok` Bash calls (PostToolUse), `bash_fail`
    failing ones (PostToolUseFailure), `writes` Writes, which `-p` without Write in --allowedTools
    denies (PermissionRequest), `agents` background subagents launched together (SubagentStart; each
    runs one Bash call: PostToolUse). The run itself starts with SessionStart (startup, then resume)."""
    from fake_messages_api import Script, reply, tool_use

    calls = [tool_use("Bash", {"command": f"echo fact {k} {i}", "description": f"check {i}"}) for i in range(bash_ok)]
    calls += [tool_use("Bash", {"command": f"echo failing {k} {i} >&2; exit 3", "description": f"fail {i}"}) for i in range(bash_fail)]
    calls += [tool_use("Write", {"file_path": str(project / f"fact-{k}-{i}.txt"), "content": f"notes {i}\n"}) for i in range(writes)]
    # interleaved, so no kind of call sits only at the start or the end of the turn
    order = sorted(range(len(calls)), key=lambda i: (i * 7919) % (len(calls) or 1))
    steps = [reply(f"Step {j}.", calls[i], message_id="msg_bench" + secrets.token_hex(10)) for j, i in enumerate(order)]
    launch = [
        tool_use("Agent", {"description": f"part {i}", "prompt": f"FACTAGENT-{k}-{i}: check part {i}", "subagent_type": "general-purpose"})
        for i in range(agents)
    ]
    if launch:
        steps.insert(len(steps) // 2, reply(f"Splitting off {agents} parts.", *launch))
    return Script(
        main=steps + [reply("Checks done; waiting for the parts.")] + [reply(f"Noted part results ({j}).") for j in range(agents + 2)],
        agents={
            f"FACTAGENT-{k}-{i}": [
                reply(tool_use("Bash", {"command": f"echo part {k} {i}", "description": "part"})),
                reply(f"Part {i} is fine."),
            ]
            for i in range(agents)
        },
    )


# ------------------------------------------------------------------------------ one variant (HOME)


class Variant:
    """A temporary HOME with our hook and the do-nothing hook registered for every event."""

    def __init__(self, bench: Bench, name: str):
        from fixtures_claude_cli import hook_command, write_hook_settings

        self.bench, self.name, self.args = bench, name, bench.args
        self.no_bytecode = name.endswith("no-bytecode")
        self.readonly = name == "readonly-precompiled"
        self.dash_b = self.no_bytecode or self.readonly  # -B in our command and the do-nothing one
        self.old = name.startswith("old-")
        self.work = bench.work / name
        self.home = self.work / "home"
        self.project = self.work / "project"
        (self.home / ".claude" / "langfuse").mkdir(parents=True)
        self.project.mkdir()
        (self.work / "debug").mkdir()
        self.state_dir = self.home / ".claude" / "state"
        standin = bench.standin
        installer = self.args.install == "installer" and not self.old
        prefix: list[str] = []  # shell words before the interpreter (the old hook's PYTHONPATH)
        if installer:
            argv = self.install_like_installer()
        else:
            config = self.home / ".claude" / "langfuse" / "config.json"
            fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(
                    {
                        "CC_LANGFUSE_PUBLIC_KEY": standin.public_key,
                        "CC_LANGFUSE_SECRET_KEY": standin.secret_key,
                        "CC_LANGFUSE_BASE_URL": standin.base_url,
                    },
                    fh,
                )
            hook_dir = self.work / "hook"
            hook_dir.mkdir()
            if self.old:
                # the single-file hook as its installer ran it: `<python> -m langfuse_hook` from a compiled
                # copy found through a path entry (the installer's venv .pth; here PYTHONPATH)
                source = subprocess.run(
                    ["git", "-C", str(REPO), "show", f"{self.args.old_rev}:hooks/langfuse_hook.py"], check=True, capture_output=True
                ).stdout
                (hook_dir / HOOK.name).write_bytes(source)
                prefix = [f"PYTHONPATH={hook_dir}"]
                argv = [bench.python, "-m", "langfuse_hook"]
            else:
                # the hook of the measured source, copied so that this run owns its bytecode cache
                shutil.copy2(bench.src / "hooks" / HOOK.name, hook_dir / HOOK.name)
                shutil.copytree(bench.src / "hooks" / PACKAGE.name, hook_dir / PACKAGE.name, ignore=shutil.ignore_patterns("__pycache__"))
                argv = [bench.python, "-I", str(hook_dir / HOOK.name)]
        if self.args.worker_debug:
            config = self.home / ".claude" / "langfuse" / "config.json"
            config.write_text(json.dumps(dict(json.loads(config.read_text()), CC_LANGFUSE_DEBUG="true")))
        self.python = argv[0]
        self.entry = self.work / "hook" / HOOK.name if self.old else pathlib.Path(argv[-1])
        self.package = self.entry.parent if self.old else self.entry.parent / PACKAGE.name
        cache = self.package / "__pycache__"
        if self.dash_b:
            argv = argv if "-B" in argv else [argv[0], "-B", *argv[1:]] if self.old else [argv[0], "-I", "-B", *argv[2:]]
        self.readonly_info: dict = {}
        if self.no_bytecode:
            if cache.is_dir():
                shutil.rmtree(cache)
            # a plain file where the cache folder would be: no process can write or read bytecode here
            cache.write_text("not a folder: bench_hook.py's no-bytecode variant\n")
        else:
            subprocess.run([self.python, "-m", "compileall", "-q", str(self.package)], check=True)
            if self.readonly:
                self.readonly_info = make_read_only(self.package)
        self.hook_argv = argv
        self.hook_env = {"PYTHONPATH": prefix[0].split("=", 1)[1]} if prefix else {}
        self.command = " ".join([*prefix, hook_command(*argv)])
        self.floor_argv = [self.python, "-I", *(["-B"] if self.dash_b else []), "-c", "pass"]
        self.floor_command = hook_command(*self.floor_argv)
        # the async fact hooks: {event: (our command, the do-nothing command)}, each tagged with a shell
        # comment naming its event (`... # PostToolUse`), so that the kernel's process events, which see
        # only `/bin/sh -c <command>`, tell the events apart; ours and the do-nothing hook alike
        self.fact_commands: dict[str, tuple[str, str]] = {}
        # --stdin-floor: a third hook on each fact event, a do-nothing hook that reads its stdin to the
        # end as ours does (`-c pass` never reads it): separates what ours costs from Claude Code's
        # delivery of the event
        self.stdin_floor_command = (
            hook_command(self.python, "-I", *(["-B"] if self.dash_b else []), "-c", "import sys; sys.stdin.buffer.read()")
            if self.args.stdin_floor
            else None
        )
        self.fact_stdin_commands: dict[str, str] = {}
        settings_path = self.home / ".claude" / "settings.json"
        if installer:
            settings = json.loads(settings_path.read_text())
            for event, groups in settings.setdefault("hooks", {}).items():
                # every event the installer registers (the measured three, and the async ones that
                # only file facts) runs the same command: -B included in the no-bytecode variants
                for g in groups:
                    for h in [h for h in g.get("hooks", []) if "langfuse_hook" in h.get("command", "")]:
                        h["command"] = self.command
                        if h.get("async") is True:
                            self.fact_commands[event] = (f"{self.command} # {event}", f"{self.floor_command} # {event}")
                            h["command"] = self.fact_commands[event][0]
                            # the do-nothing hook on the same event, as async, in the same handler group
                            g["hooks"].append({"type": "command", "command": self.fact_commands[event][1], "async": True})
                            if self.stdin_floor_command:
                                self.fact_stdin_commands[event] = f"{self.stdin_floor_command} # {event}"
                                g["hooks"].append({"type": "command", "command": self.fact_stdin_commands[event], "async": True})
                            break
            for event in EVENTS:
                groups = settings["hooks"].setdefault(event, [])
                ours = [h for g in groups for h in g.get("hooks", []) if h.get("command") == self.command]
                if not ours:
                    raise RuntimeError(f"the installer registered no hook for {event}: {groups}")
                ours_group = next(g for g in groups if any(h in g["hooks"] for h in ours))
                ours_group["hooks"].append({"type": "command", "command": self.floor_command})
            settings_path.write_text(json.dumps(settings, indent=2))
        else:
            hooks: dict = {event: [self.command, self.floor_command] for event in EVENTS}
            if not self.old:  # the single-file hook handles no fact events
                for event in installer_async_events(bench.src):
                    self.fact_commands[event] = (f"{self.command} # {event}", f"{self.floor_command} # {event}")
                    hooks[event] = [{"type": "command", "command": c, "async": True} for c in self.fact_commands[event]]
                    if self.stdin_floor_command:
                        self.fact_stdin_commands[event] = f"{self.stdin_floor_command} # {event}"
                        hooks[event].append({"type": "command", "command": self.fact_stdin_commands[event], "async": True})
            write_hook_settings(self.home, hooks)
        self.runs: list[dict] = []
        self.sessions: dict[str, tuple[str, pathlib.Path]] = {}
        self.snapshots: dict[str, dict] = {}

    def install_like_installer(self) -> list[str]:
        """What scripts/install-hook.sh leaves behind, through its own helper (settings_merge.py apply).
        Only the pip step differs: the venv is made --without-pip and gets the SDK from the repo's
        .venv through a second .pth. Returns the registered command's argv."""
        venv = self.home / ".claude" / "langfuse" / "venv"
        subprocess.run([self.bench.python, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True)
        venv_python = venv / "bin" / "python"

        def purelib(py):
            return subprocess.run(
                [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True, capture_output=True, text=True
            ).stdout.strip()

        pathlib.Path(purelib(str(venv_python)), "bench_sdk_from_repo_venv.pth").write_text(purelib(self.bench.python) + "\n")
        standin = self.bench.standin
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(self.home),
            "CC_LANGFUSE_PUBLIC_KEY": standin.public_key,
            "CC_LANGFUSE_SECRET_KEY": standin.secret_key,
            "CC_LANGFUSE_BASE_URL": standin.base_url,
        }
        proc = subprocess.run(
            [
                self.bench.python,
                str(self.bench.src / "scripts" / "settings_merge.py"),
                "apply",
                "--home",
                str(self.home),
                "--repo",
                str(self.bench.src),
                "--env-file",
                str(self.work / "no.env"),
            ],
            env=env,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise RuntimeError("settings_merge.py apply failed: %s %s" % (proc.stdout, proc.stderr))
        settings = json.loads((self.home / ".claude" / "settings.json").read_text())
        command = next(h["command"] for g in settings["hooks"]["Stop"] for h in g["hooks"] if "langfuse_hook" in h["command"])
        argv = shlex.split(command)
        if len(argv) != 3 or argv[1] != "-I" or not argv[2].endswith("langfuse_hook.py"):
            raise RuntimeError(
                f"the installer registers {command!r}, not `<python> -I <path>/langfuse_hook.py`: "
                "it predates the package; use --install script"
            )
        return argv

    # -- one claude -p run
    def run(self, scenario: str, tag: str, script, session: str | None = None, measured: bool = True) -> dict:
        from fixtures_claude_cli import run_claude

        n = len(self.runs) + 1
        transcript = self.sessions[session][1] if session else None
        before = transcript.stat().st_size if transcript else 0
        debug = self.work / "debug" / f"run-{n:03d}.txt"
        load = loadavg()
        t0 = time.monotonic_ns()
        run = run_claude(
            self.home,
            self.project,
            f"bench {self.name} {scenario} {tag} #{n}: run the check",
            script,
            resume=session,
            claude=self.bench.claude,
            timeout=900,
            extra_args=["--debug-file", str(debug)],
        )
        t1 = time.monotonic_ns()
        self.sessions[run.session_id] = (run.session_id, run.transcript)
        rec = {
            "n": n,
            "scenario": scenario,
            "tag": tag,
            "measured": measured,
            "session_id": run.session_id,
            "transcript": str(run.transcript),
            "offset_before": before,
            "offset_after": run.transcript.stat().st_size,
            "t0_ns": t0,
            "t1_ns": t1,
            "debug": str(debug),
            "cli_s": round(run.duration, 2),
            "load": load,
        }
        self.runs.append(rec)
        return rec

    def snapshot(self, scenario: str, session: str) -> None:
        """--keep: the worker's state just before the scenario's last measured run (for profile_stop.py)."""
        wait_worker_idle(self.state_dir)
        snap = self.work / f"snap-{scenario}"
        shutil.copytree(self.state_dir, snap / "state", ignore=shutil.ignore_patterns("locks", "inbox"))
        for name in ("pending_traces.jsonl", "dead_traces.jsonl", "langfuse_hook.log"):
            (snap / "state" / name).unlink(missing_ok=True)
        self.snapshots[scenario] = {"dir": str(snap), "session_id": session, "transcript": str(self.sessions[session][1])}

    def finish_snapshot(self, scenario: str, rec: dict) -> None:
        """After that run: its first Stop event as Claude Code sent it (rebuilt from the transcript)."""
        snap = self.snapshots.get(scenario)
        if not snap:
            return
        rows = rows_between(rec["transcript"], rec["offset_before"], rec["offset_after"])
        prompt = next(
            r for r in rows if r.get("type") == "user" and r.get("promptId") and isinstance((r.get("message") or {}).get("content"), str)
        )
        texts = [b.get("text") for r in rows if r.get("type") == "assistant" for b in r["message"]["content"] if b.get("type") == "text"]
        event = {
            "session_id": rec["session_id"],
            "transcript_path": rec["transcript"],
            "cwd": str(self.project),
            "prompt_id": prompt["promptId"],
            "permission_mode": "default",
            "hook_event_name": "Stop",
            "stop_hook_active": False,
            "last_assistant_message": texts[-1] if texts else "",
        }
        snap.update(event=event, transcript_bytes=rec["offset_after"])
        pathlib.Path(snap["dir"], "snapshot.json").write_text(json.dumps(snap, indent=1))

    # -- scenarios
    def scenario_fresh(self) -> None:
        turns = self.args.turns
        print(f"[{self.name}] fresh: {turns} turns in a new session ...", flush=True)
        session = None
        for k in range(1, turns + 1):
            if k == turns and self.args.keep:
                self.snapshot("fresh", session)
            rec = self.run("fresh", "turn", turn_script("fresh", k), session)
            session = rec["session_id"]
            if k == turns:
                self.finish_snapshot("fresh", rec)
        self.fresh_session = session

    def scenario_grown(self) -> None:
        fresh_sid, fresh_path = self.sessions[self.fresh_session]
        templates = split_runs(fresh_path.read_bytes().splitlines())[1:]  # later runs: the steady-state shape of a turn
        for s in range(1, self.args.grown_sessions + 1):
            seed = self.run("grown", "seed", turn_script("grown-seed", s), measured=False)
            sid, path = self.sessions[seed["session_id"]]
            wait_worker_idle(self.state_dir)  # the worker has read the seed turn: all that follows is new to it
            t0 = time.monotonic()
            target = path.stat().st_size + int(self.args.grow_mb * MB)
            cloned = grow_transcript(path, templates, sid, target, source_session_id=fresh_sid)
            print(
                f"[{self.name}] grown {s}/{self.args.grown_sessions}: +{self.args.grow_mb:g} MB ({cloned} cloned turns, "
                f"{time.monotonic() - t0:.1f} s) the hook never saw, then {self.args.grown_turns} turns ...",
                flush=True,
            )
            for k in range(1, self.args.grown_turns + 1):
                last = s == self.args.grown_sessions and k == 1
                if last and self.args.keep:
                    self.snapshot("grown", sid)
                rec = self.run("grown", "first-after-growth" if k == 1 else "after", turn_script("grown", k), sid)
                rec["cloned_turns"] = cloned if k == 1 else 0
                if last:
                    self.finish_snapshot("grown", rec)

    def scenario_open(self) -> None:
        mb = self.args.open_mb
        for s in range(1, self.args.open_sessions + 1):
            seed = self.run("open", "seed", turn_script("open-seed", s), measured=False)
            sid, path = self.sessions[seed["session_id"]]
            print(
                f"[{self.name}] open {s}/{self.args.open_sessions}: a turn that writes {mb:g} MB before its Stop, then one more turn ...",
                flush=True,
            )
            last = s == self.args.open_sessions
            if last and self.args.keep:
                self.snapshot("open", sid)
            rec = self.run("open", "open-turn", open_turn_script(self.python, path, mb, s), sid)
            if last:
                self.finish_snapshot("open", rec)
            self.run("open", "after-open", turn_script("after-open", s), sid)

    def scenario_facts(self) -> None:
        a = self.args
        if not self.fact_commands:
            print(f"[{self.name}] facts: skipped (this hook registers no async fact hooks)", flush=True)
            return
        print(
            f"[{self.name}] facts: {a.fact_runs} runs of one session, each {a.fact_bash} Bash calls, {a.fact_fails} failing, "
            f"{a.fact_writes} denied Writes, {a.fact_agents} background subagents ...",
            flush=True,
        )
        session = None
        for k in range(1, a.fact_runs + 1):
            script = facts_script(self.project, k, a.fact_bash, a.fact_fails, a.fact_writes, a.fact_agents)
            rec = self.run("facts", "turn", script, session)
            session = rec["session_id"]

    def scenario_subagents(self) -> None:
        n, runs = self.args.subagents, self.args.subagent_runs
        print(f"[{self.name}] subagents: {runs} prompts, each launching {n} background subagents ...", flush=True)
        session = None
        for k in range(1, runs + 1):
            rec = self.run("subagents", "launch", subagents_script(n, k), session)
            session = rec["session_id"]

    def run_all(self) -> None:
        from fixtures_claude_cli import run_claude

        # an unmeasured run in a throwaway session: the CLI's and the interpreter's files in the page cache
        run_claude(self.home, self.project, "warm-up", turn_script("warmup", 0), claude=self.bench.claude, timeout=600)
        for scenario in self.args.scenarios:
            getattr(self, "scenario_" + scenario)()


def rows_between(transcript: str, start: int, end: int) -> list[dict]:
    with open(transcript, "rb") as fh:
        fh.seek(start)
        data = fh.read(end - start)
    rows = []
    for line in data.splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            pass
    return rows


# ------------------------------------------------------------------------------ the bench


class Bench:
    def __init__(self, args):
        from fixtures_claude_cli import install_claude_cli

        self.args = args
        self.python = args.python
        self.claude = install_claude_cli()
        self.work = pathlib.Path(tempfile.mkdtemp(prefix="bench-hook-"))
        self.src = export_source(args.source, self.work / "src")
        self.standin = StandinProcess(self.python, self.work)
        self.variants: list[Variant] = []
        self.commands: dict[str, str] = {}  # shell command -> label, for ProcWatch
        self.entries: dict[str, str] = {}  # hook file -> variant name: its background worker (old: sender)
        self.watch: ProcWatch | None = None
        self.wall_minus_mono_ns = time.time_ns() - time.monotonic_ns()
        try:
            self.watch = ProcWatch(self._label)
        except OSError as e:
            print(f"note: no kernel process events ({e}; needs root): SessionEnd durations are not measured", flush=True)
        self.results: dict = {"variants": {}, "targets": TARGETS, "before": BEFORE, "install": args.install}

    def _label(self, argv: list[str]) -> str | None:
        # Claude Code runs each hook as `/bin/sh -c <command>`
        if len(argv) == 3 and argv[1] == "-c":
            return self.commands.get(argv[2])
        if len(argv) >= 3 and argv[-1] in ("worker", "send") and argv[-2] in self.entries:
            return self.entries[argv[-2]] + ":worker"
        return None

    def run_variant(self, name: str) -> None:
        v = Variant(self, name)
        self.variants.append(v)
        self.commands[v.command] = f"{name}:ours"
        self.commands[v.floor_command] = f"{name}:floor"
        for event, (ours, floor) in v.fact_commands.items():
            self.commands[ours] = f"{name}:ours:{event}"
            self.commands[floor] = f"{name}:floor:{event}"
        for event, cmd in v.fact_stdin_commands.items():
            self.commands[cmd] = f"{name}:floor-stdin:{event}"
        self.entries[str(v.entry)] = name
        registered = json.loads((v.home / ".claude" / "settings.json").read_text()).get("hooks", {})
        info = {
            "hook_command": v.command,
            "floor_command": v.floor_command,
            # event -> the async flag of each handler of ours (the fact events' commands carry their event's tag)
            "events_registered": {
                e: [
                    h.get("async", False)
                    for g in gs
                    for h in g["hooks"]
                    if h.get("command") in (v.command, v.fact_commands.get(e, ("",))[0])
                ]
                for e, gs in registered.items()
            },
            "fact_commands": v.fact_commands,
            "load_before": loadavg(),
        }
        t0 = time.monotonic()
        v.run_all()
        info["run_s"] = round(time.monotonic() - t0, 1)
        info["load_after"] = loadavg()
        if v.readonly_info:
            ro = dict(v.readonly_info)
            before = ro.pop("state_before")
            after = tree_state(v.package)
            # nothing may have written into the read-only package: no new, changed or removed file
            ro["package_unchanged"] = after == before
            ro["changed"] = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))[:20]
            # bytecode written elsewhere in the HOME meanwhile (a pycache_prefix the package may choose
            # when its folder is read-only, e.g. ~/.cache/claude-code-langfuse/pycache), by the hook or its worker
            elsewhere = [
                f
                for f in v.home.rglob("*.pyc")
                if v.package not in f.parents and (v.home / ".claude" / "langfuse" / "venv") not in f.parents
            ]
            ro["pyc_elsewhere_in_home"] = {
                "files": len(elsewhere),
                "mb": round(sum(f.stat().st_size for f in elsewhere) / MB, 1),
                "of_the_package": sum(1 for f in elsewhere if f"/{PACKAGE.name}/" in str(f)),
                "folders": sorted({str(f.relative_to(v.home)).split("/pycache/")[0] for f in elsewhere})[:5],
            }
            info["readonly"] = ro
        self.results["variants"][name] = info

    # -- reading back what Claude Code and the kernel recorded
    def collect(self, v: Variant) -> None:
        info = self.results["variants"][v.name]
        stops, subs, ends, checks, facts = [], [], [], [], []
        for rec in v.runs:
            rows = rows_between(rec["transcript"], rec["offset_before"], rec["offset_after"])
            turn_key = None
            for row in rows:
                if row.get("type") == "user" and row.get("promptId") and isinstance((row.get("message") or {}).get("content"), str):
                    turn_key = row["promptId"]
                elif row.get("type") == "system" and row.get("subtype") == "stop_hook_summary":
                    infos = row.get("hookInfos") or []
                    ours = [h.get("durationMs") for h in infos if h.get("command") == v.command]
                    floor = [h.get("durationMs") for h in infos if h.get("command") == v.floor_command]
                    if ours and floor and ours[0] is not None and floor[0] is not None:
                        stops.append(
                            {
                                "run": rec["n"],
                                "scenario": rec["scenario"],
                                "tag": rec["tag"],
                                "measured": rec["measured"],
                                "ours_ms": ours[0],
                                "floor_ms": floor[0],
                                "timestamp": row["timestamp"],
                                "turn_key": turn_key,
                                "session_id": rec["session_id"],
                            }
                        )
            debug_lines = pathlib.Path(rec["debug"]).read_text(errors="replace").splitlines() if os.path.exists(rec["debug"]) else []
            sub = {"ours": [], "floor": []}
            for line in debug_lines:
                m = SUBAGENT_LINE_RE.search(line)
                if m and m.group(1) == "SubagentStop":
                    who = "ours" if m.group(2) == v.command else "floor" if m.group(2) == v.floor_command else None
                    if who:
                        sub[who].append(int(m.group(4)))
            if sub["ours"] or sub["floor"]:
                subs.append({"run": rec["n"], "scenario": rec["scenario"], "tag": rec["tag"], "measured": rec["measured"], **sub})
            if self.watch:
                ours = self.watch.lives(f"{v.name}:ours", rec["t0_ns"], rec["t1_ns"])
                floor = self.watch.lives(f"{v.name}:floor", rec["t0_ns"], rec["t1_ns"])
                # background processes our hook started during the run (the old hook: senders)
                rec["workers_started"] = len(self.watch.lives(f"{v.name}:worker", rec["t0_ns"], rec["t1_ns"], running=True))
                if ours and floor:
                    # SessionEnd is the last hook event of a `-p` run
                    ends.append(
                        {
                            "run": rec["n"],
                            "scenario": rec["scenario"],
                            "tag": rec["tag"],
                            "measured": rec["measured"],
                            "ours_ms": ours[-1]["ms"],
                            "floor_ms": floor[-1]["ms"],
                            "hook_processes": [len(ours), len(floor)],
                        }
                    )
                for event in v.fact_commands:
                    # async: the life of every process of the event's command forked during the run;
                    # one that a signal ended (Claude Code's SIGTERM at shutdown) is counted, not timed
                    o = self.watch.lives(f"{v.name}:ours:{event}", rec["t0_ns"], rec["t1_ns"], running=True)
                    f = self.watch.lives(f"{v.name}:floor:{event}", rec["t0_ns"], rec["t1_ns"], running=True)
                    fs = self.watch.lives(f"{v.name}:floor-stdin:{event}", rec["t0_ns"], rec["t1_ns"]) if v.fact_stdin_commands else []
                    if o or f:
                        facts.append(
                            {
                                "run": rec["n"],
                                "scenario": rec["scenario"],
                                "tag": rec["tag"],
                                "measured": rec["measured"],
                                "event": event,
                                "ours": [p["ms"] for p in o if p["ms"] is not None and not p["signal"]],
                                "floor": [p["ms"] for p in f if p["ms"] is not None and not p["signal"]],
                                "not_timed": [sum(1 for p in x if p["ms"] is None or p["signal"]) for x in (o, f)],
                                # how each untimed one ended: the signal number, or None (no exit seen)
                                "untimed_signals": [[p["signal"] for p in x if p["ms"] is None or p["signal"]] for x in (o, f)],
                                **({"floor_stdin": [p["ms"] for p in fs if not p["signal"]]} if v.fact_stdin_commands else {}),
                            }
                        )
                run_stops = [s for s in stops if s["run"] == rec["n"]]
                if run_stops and rec["scenario"] not in ("subagents", "facts"):
                    # the kernel's life of the Stop hook processes next to Claude Code's durationMs for
                    # the same calls: the processes of each command that ended last before Claude Code
                    # wrote the run's first stop_hook_summary (written once all Stop hooks returned)
                    written_ns = parse_ts(run_stops[0]["timestamp"]) * 1e9 - self.wall_minus_mono_ns + 2e6
                    o = [p for p in ours if p["end_ns"] <= written_ns]
                    f = [p for p in floor if p["end_ns"] <= written_ns]
                    if o and f:
                        o_stop, f_stop = max(o, key=lambda p: p["end_ns"]), max(f, key=lambda p: p["end_ns"])
                        checks.append({"ours": [run_stops[0]["ours_ms"], o_stop["ms"]], "floor": [run_stops[0]["floor_ms"], f_stop["ms"]]})
        info["stops"], info["subagent_stops"], info["session_ends"], info["fact_hooks"] = stops, subs, ends, facts
        if checks:
            diffs = [c[w][0] - c[w][1] for c in checks for w in ("ours", "floor")]
            info["check_durationms_minus_process_life_ms"] = {
                "n": len(diffs),
                "median": median(diffs),
                "min": min(diffs),
                "max": max(diffs),
            }
        info["runs"] = v.runs

    def wait_arrivals(self, timeout: float) -> None:
        expected = set()
        for v in self.variants:
            for s in self.results["variants"][v.name]["stops"]:
                if s["measured"] and s["turn_key"]:
                    expected.add(trace_id_for(s["session_id"], s["turn_key"]))
        deadline = time.monotonic() + timeout
        while True:
            self.standin.poll()
            missing = expected - set(self.standin.first_root_arrival)
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        for v in self.variants:
            for s in self.results["variants"][v.name]["stops"]:
                arrival = self.standin.first_root_arrival.get(trace_id_for(s["session_id"], s["turn_key"] or ""))
                start = parse_ts(s["timestamp"]) - s["ours_ms"] / 1000
                s["stop_to_standin_s"] = round(arrival - start, 3) if arrival is not None else None

    def summarize(self) -> None:
        for info in self.results["variants"].values():
            summary = {}
            for scenario in self.args.scenarios:
                sc = {}
                m_stops = [s for s in info["stops"] if s["scenario"] == scenario and s["measured"]]
                sc["Stop"] = pair_stats([s["ours_ms"] for s in m_stops], [s["floor_ms"] for s in m_stops])
                m_subs = [s for s in info["subagent_stops"] if s["scenario"] == scenario and s["measured"]]
                if m_subs:
                    sc["SubagentStop"] = pair_stats([x for s in m_subs for x in s["ours"]], [x for s in m_subs for x in s["floor"]])
                m_ends = [s for s in info["session_ends"] if s["scenario"] == scenario and s["measured"]]
                if m_ends:
                    sc["SessionEnd"] = pair_stats([s["ours_ms"] for s in m_ends], [s["floor_ms"] for s in m_ends])
                for event in FACT_EVENTS:
                    m_facts = [s for s in info.get("fact_hooks", []) if s["scenario"] == scenario and s["measured"] and s["event"] == event]
                    if m_facts:
                        sc[event] = pair_stats([x for s in m_facts for x in s["ours"]], [x for s in m_facts for x in s["floor"]])
                        sc[event]["floor_n"] = sum(len(s["floor"]) for s in m_facts)
                        sc[event]["not_timed"] = [sum(s["not_timed"][0] for s in m_facts), sum(s["not_timed"][1] for s in m_facts)]
                        stdin_floor = [x for s in m_facts for x in s.get("floor_stdin", [])]
                        if stdin_floor:
                            mf = median(stdin_floor)
                            sc[event]["floor_stdin"] = {
                                "n": len(stdin_floor),
                                "median": mf,
                                "ratio_ours_to_it": round(sc[event]["ours_median"] / mf, 2) if mf else None,
                                "ratio_it_to_floor": round(mf / sc[event]["floor_median"], 2) if sc[event]["floor_median"] else None,
                            }
                        sc[event]["untimed_signals"] = [[x for s in m_facts for x in s.get("untimed_signals", [[], []])[i]] for i in (0, 1)]
                started = [
                    r["workers_started"] for r in info["runs"] if r["scenario"] == scenario and r["measured"] and "workers_started" in r
                ]
                if started:
                    sc["workers_started_per_run"] = {"median": median(started), "max": max(started), "runs": len(started)}
                lat = [s["stop_to_standin_s"] for s in m_stops if s["stop_to_standin_s"] is not None]
                sc["stop_to_standin_s"] = {
                    "n": len(lat),
                    "of": len(m_stops),
                    "p50": percentile(lat, 50) if lat else None,
                    "p95": percentile(lat, 95) if lat else None,
                    "max": max(lat) if lat else None,
                }
                for tag in ("first-after-growth", "open-turn", "after-open"):
                    tagged = [s for s in m_stops if s["tag"] == tag]
                    if tagged:
                        sc[tag] = {
                            "Stop": pair_stats([s["ours_ms"] for s in tagged], [s["floor_ms"] for s in tagged]),
                            "stop_to_standin_s": [s["stop_to_standin_s"] for s in tagged],
                        }
                summary[scenario] = sc
            info["summary"] = summary

    # -- outside Claude Code: where a hook process's time goes
    def diagnose(self) -> None:
        if not self.variants:
            return
        diag: dict = {}
        scratch = self.work / "diag"
        scratch.mkdir()
        transcript = scratch / "t.jsonl"
        transcript.write_text('{"type":"user","message":{"role":"user","content":"hi"},"promptId":"p1","uuid":"u1"}\n')
        event = json.dumps(
            {"session_id": "diag", "transcript_path": str(transcript), "hook_event_name": "Stop", "prompt_id": "p1", "cwd": str(scratch)}
        ).encode()
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(scratch),
            "CC_LANGFUSE_STATE_DIR": str(scratch / "state"),
            "TRACE_TO_LANGFUSE": "false",
        }
        lock_path = scratch / "state" / "locks" / "worker.lock"
        lock_path.parent.mkdir(parents=True)
        import fcntl

        holder = open(lock_path, "a+b")
        fcntl.flock(holder, fcntl.LOCK_EX)  # a "running worker": the hook probes the lock and spawns nothing

        def wall(argv, runs):
            out = []
            for _ in range(runs):
                t = time.perf_counter()
                subprocess.run(argv, input=event, capture_output=True, env=env, timeout=120)
                out.append((time.perf_counter() - t) * 1000)
            return out

        try:
            argvs = {}
            new = [v for v in self.variants if not v.old]
            for v in new:
                argvs[f"do-nothing ({v.name})"] = v.floor_argv
                argvs[f"hook, worker running ({v.name})"] = v.hook_argv
            samples: dict[str, list] = {k: [] for k in argvs}
            for _ in range(20):  # interleaved, so drift hits every command alike
                for k, argv in argvs.items():
                    samples[k] += wall(argv, 1)
            diag["wall_ms_median"] = {k: median(s) for k, s in samples.items()}
            for v in new:
                proc = subprocess.run(
                    [v.hook_argv[0], "-X", "importtime", *v.hook_argv[1:]], input=event, capture_output=True, env=env, timeout=120
                )
                imports = []
                for line in proc.stderr.decode(errors="replace").splitlines():
                    m = re.match(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)", line)
                    if m:
                        imports.append(
                            {
                                "self_us": int(m.group(1)),
                                "cumulative_us": int(m.group(2)),
                                "depth": (len(m.group(3)) - 1) // 2,
                                "module": m.group(4),
                            }
                        )
                top = sorted((i for i in imports if i["depth"] == 0), key=lambda i: -i["cumulative_us"])[:12]
                ours = [i for i in imports if i["module"].startswith("claude_code_langfuse")]
                diag[f"importtime_{v.name}"] = {
                    "total_ms": round(sum(i["self_us"] for i in imports) / 1000, 1),
                    "package_ms": round(sum(i["self_us"] for i in ours) / 1000, 1),
                    "package_modules": [i["module"] for i in ours],
                    "top_level": [(i["module"], round(i["cumulative_us"] / 1000, 1)) for i in top],
                }
        finally:
            holder.close()
        # the spawn: the hook with no worker running starts one (which, tracing off, only moves the
        # cursor and lingers 2 s): measured with the lock free, waiting for the worker to exit each time
        v = next((v for v in self.variants if not v.old), None)
        if v is None:
            self.results["diagnosis"] = diag
            return
        spawn = []
        for _ in range(self.args.spawn_repeats):
            wait_worker_idle(scratch / "state", timeout=30)
            spawn += wall(v.hook_argv, 1)
        wait_worker_idle(scratch / "state", timeout=30)
        diag[f"hook_starting_the_worker_ms ({v.name})"] = {"median": median(spawn), "all": [round(x, 1) for x in spawn]}
        self.results["diagnosis"] = diag

    def close(self) -> None:
        for v in self.variants:
            wait_worker_idle(v.state_dir, timeout=30)
            if v.readonly:
                undo_read_only(v.package)  # else the work dir cannot be removed (chattr +i stops root too)
        if self.watch:
            self.watch.close()
        self.standin.stop()
        if not self.args.keep:
            shutil.rmtree(self.work, ignore_errors=True)


def pair_stats(ours: list[float], floor: list[float]) -> dict:
    mo, mf = median(ours), median(floor)
    return {
        "n": len(ours),
        "ours_median": mo,
        "floor_median": mf,
        "ratio": round(mo / mf, 2) if mo is not None and mf else None,
        "ours_p90": percentile(ours, 90) if ours else None,
        "floor_p90": percentile(floor, 90) if floor else None,
        "ours_max": max(ours) if ours else None,
    }


# ------------------------------------------------------------------------------ report


def verdict_rows(results: dict) -> list[tuple[str, str, str, bool | None]]:
    rows = []
    limit = TARGETS["ratio_to_floor"]
    for name, info in results["variants"].items():
        for scenario, sc in info.get("summary", {}).items():
            for event in EVENTS + FACT_EVENTS:
                st = sc.get(event)
                if not st or not st["n"]:
                    continue
                rows.append(
                    (
                        f"{name} / {scenario} / {event}",
                        f"{st['ours_median']} vs {st['floor_median']} ms (n={st['n']})",
                        f"ratio {st['ratio']} <= {limit}",
                        st["ratio"] is not None and st["ratio"] <= limit,
                    )
                )
            for tag in ("first-after-growth", "open-turn", "after-open"):
                t = sc.get(tag)
                if t:
                    st = t["Stop"]
                    rows.append(
                        (
                            f"{name} / {scenario} / Stop, {tag}",
                            f"{st['ours_median']} vs {st['floor_median']} ms (n={st['n']}); to stand-in {t['stop_to_standin_s']} s",
                            f"ratio {st['ratio']} <= {limit}",
                            st["ratio"] is not None and st["ratio"] <= limit,
                        )
                    )
            lat = sc["stop_to_standin_s"]
            rows.append(
                (
                    f"{name} / {scenario} / Stop -> stand-in",
                    f"p50 {lat['p50']} s, p95 {lat['p95']} s, max {lat['max']} s ({lat['n']}/{lat['of']})",
                    f"p95 <= {TARGETS['stop_to_standin_p95_s']} s",
                    lat["p95"] is not None and lat["p95"] <= TARGETS["stop_to_standin_p95_s"] and lat["n"] == lat["of"],
                )
            )
    return rows


def print_table(results: dict) -> None:
    rows = verdict_rows(results)
    if not rows:
        return
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    print()
    print(f"{'measure (ours vs do-nothing, medians)':<{w0}}  {'measured':<{w1}}  {'target':<18} verdict")
    for name, value, target, ok in rows:
        print(f"{name:<{w0}}  {value:<{w1}}  {target:<18} {'-' if ok is None else 'PASS' if ok else 'MISS'}")
    for name, info in results["variants"].items():
        check = info.get("check_durationms_minus_process_life_ms")
        print(f"  {name}: {info.get('run_s')} s, load {info['load_before']} -> {info['load_after']}; hook `{info['hook_command']}`")
        if check:
            print(
                f"    Claude Code's durationMs minus the kernel's process life, same Stop calls: median {check['median']} ms"
                f" (min {check['min']}, max {check['max']}, n={check['n']})"
            )
        workers = {sc: v["workers_started_per_run"] for sc, v in info.get("summary", {}).items() if "workers_started_per_run" in v}
        if workers:
            print(
                "    background processes the hook started per run (median/max): "
                + ", ".join(f"{sc} {w['median']}/{w['max']}" for sc, w in workers.items())
            )
    diag = results.get("diagnosis")
    if diag:
        print("\noutside Claude Code (median wall ms of 20 interleaved runs each):")
        for k, val in diag["wall_ms_median"].items():
            print(f"  {k:<44} {val}")
        for k, val in diag.items():
            if k.startswith("importtime_"):
                print(f"  -X importtime {k[11:]}: {val['total_ms']} ms in all, the package's own {val['package_ms']} ms")
            elif k.startswith("hook_starting"):
                print(f"  {k}: median {val['median']}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few runs of every scenario and variant (~2 min)")
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="cached,no-bytecode,readonly-precompiled (default all three); old-cached,old-no-bytecode add the single-file hook "
        "of --old-rev in the same run",
    )
    parser.add_argument(
        "--source",
        default="HEAD",
        help="commit whose hooks/ and installer are measured (default HEAD, exported with git archive); worktree: the files as they are",
    )
    parser.add_argument("--old-rev", default=OLD_REV, help=f"commit of the single-file hook for the old-* variants (default {OLD_REV})")
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help="fresh,grown,open,subagents,facts (default all; grown needs fresh)"
    )
    parser.add_argument("--turns", type=int, default=30, help="turns of the fresh scenario (default 30)")
    parser.add_argument("--grown-sessions", type=int, default=3, help="sessions grown by --grow-mb (default 3)")
    parser.add_argument("--grown-turns", type=int, default=3, help="measured turns after each growth, the first included (default 3)")
    parser.add_argument("--grow-mb", type=float, default=20, help="new transcript the hook never saw (default 20)")
    parser.add_argument("--open-sessions", type=int, default=3, help="sessions with an open turn of --open-mb (default 3)")
    parser.add_argument("--open-mb", type=float, default=25, help="size of the open turn (default 25)")
    parser.add_argument("--subagents", type=int, default=10, help="background subagents per prompt (default 10)")
    parser.add_argument("--subagent-runs", type=int, default=6, help="prompts launching them (default 6)")
    parser.add_argument("--fact-runs", type=int, default=20, help="facts: `claude -p` runs of one session (default 20)")
    parser.add_argument("--fact-bash", type=int, default=3, help="facts: Bash calls that succeed, per run (default 3)")
    parser.add_argument("--fact-fails", type=int, default=2, help="facts: Bash calls that exit 3, per run (default 2)")
    parser.add_argument("--fact-writes", type=int, default=2, help="facts: Writes -p denies (PermissionRequest), per run (default 2)")
    parser.add_argument(
        "--stdin-floor",
        action="store_true",
        help="also a do-nothing hook that reads its stdin (`-c 'import sys; sys.stdin.buffer.read()'`) on each fact event",
    )
    parser.add_argument("--fact-agents", type=int, default=2, help="facts: background subagents per run (default 2)")
    parser.add_argument(
        "--python",
        default=str(REPO / ".venv" / "bin" / "python"),
        help="interpreter for the hook and the do-nothing hook (default: the repo's .venv, which has the SDK for the worker)",
    )
    parser.add_argument(
        "--install",
        choices=("installer", "script"),
        default="installer",
        help="installer: through scripts/settings_merge.py apply (`<venv python> -I ~/.claude/langfuse/langfuse_hook.py`); "
        "script: `<python> -I <copy of the repo's hooks/>/langfuse_hook.py`",
    )
    parser.add_argument("--drain-timeout", type=float, default=300, help="seconds to wait for the last turns at the stand-in")
    parser.add_argument("--no-diagnose", dest="diagnose", action="store_false", help="skip the outside-Claude-Code breakdown")
    parser.add_argument("--spawn-repeats", type=int, default=6, help="diagnosis: hook runs that start a worker (default 6)")
    parser.add_argument(
        "--worker-debug",
        action="store_true",
        help="CC_LANGFUSE_DEBUG=true in config.json: the worker logs each event it reads (with --keep)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary HOMEs, transcripts, state snapshots (profile_stop.py)")
    parser.add_argument("--append-open-turn", nargs=2, metavar=("TRANSCRIPT", "MB"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.append_open_turn:
        append_open_turn(args.append_open_turn[0], float(args.append_open_turn[1]))
        return 0
    if args.quick:
        args.turns, args.grown_sessions, args.grown_turns = min(args.turns, 6), 1, 2
        args.open_sessions, args.subagent_runs, args.spawn_repeats = 1, 2, 3
        args.fact_runs = min(args.fact_runs, 3)
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in args.variants if v not in VARIANTS + OLD_VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}: choose from {', '.join(VARIANTS + OLD_VARIANTS)}")
    args.scenarios = [s for s in SCENARIOS if s in args.scenarios.split(",")]
    if "grown" in args.scenarios and "fresh" not in args.scenarios:
        parser.error("the grown scenario clones the fresh scenario's turns: keep fresh in --scenarios")
    started = time.time()
    # stopped from outside (even when started in the background, where SIGINT is ignored): clean up
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    bench = Bench(args)
    print(f"work dir {bench.work}; stand-in {bench.standin.base_url}; claude {bench.claude}", flush=True)
    out = None
    try:
        bench.results["machine"] = machine_info(args.python, bench.claude, bench.src)
        bench.results["source"] = {"rev": args.source, "commit": git_rev(args.source)}
        bench.results["command"] = " ".join([sys.executable] + sys.argv)
        bench.results["load_start"] = loadavg()
        bench.results["started_utc"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        for name in args.variants:
            bench.run_variant(name)
            bench.collect(bench.variants[-1])
        bench.wait_arrivals(args.drain_timeout)
        bench.summarize()
        if args.diagnose:
            print("[diagnosis] the hook outside Claude Code ...", flush=True)
            bench.diagnose()
        bench.results["load_end"] = loadavg()
        bench.results["elapsed_s"] = round(time.time() - started, 1)
        bench.results["verdicts"] = [{"measure": a, "measured": b, "target": c, "ok": d} for a, b, c, d in verdict_rows(bench.results)]
        bench.results["snapshots"] = {v.name: v.snapshots for v in bench.variants}
    finally:
        bench.close()
        RESULTS.mkdir(parents=True, exist_ok=True)
        out = RESULTS / ("bench_hook-%s.json" % dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ"))
        out.write_text(json.dumps(bench.results, indent=1))
    print_table(bench.results)
    print(f"\n{bench.results.get('elapsed_s')} s; results in {out}" + (f"; work dir kept: {bench.work}" if args.keep else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
