"""The worker: the one background process per state folder that does the real work.

Woken by the hook (or started by `drain`), it takes the inbox oldest first, per transcript in
the order the events fired; for each event it reads the transcript's new lines, groups them into
turns, redacts and queues them, moves the cursor; then it delivers the queue. It lingers a
moment for more news, so a burst of events (ten subagents finishing) costs one start-up.

It waits, bounded, for Claude Code: Stop often fires before the final answer is flushed, and
before a new `-p` session's transcript file even exists. A news file stays in the inbox until
its turn could be read whole or its wait ran out (then the event's `last_assistant_message`
stands in for the answer, as the record's metadata says).
"""

from __future__ import annotations

import os
import sys
import time
from typing import NamedTuple

from . import facts
from .collect import process_event
from .config import Settings, ensure_state_dir, get_logger, load_settings
from .delivery import drain_queue, key_fingerprint, update_sender_status
from .event import BadEvent, event_from_dict
from .files import FileLock, Paths, access_advice, read_json_file, write_atomic
from .inbox import SETTINGS_NAMES, SETTINGS_PREFIXES, is_secret_setting, list_news, read_news, remove_news
from .runtime import (
    PIP_ADVICE,
    RUNTIME_REQUIREMENTS,
    VENV_ADVICE,
    bootstrap_waits,
    cache_bytecode,
    entry_argv,
    note_bootstrap,
    plugin_venv,
    sender_python,
    spawn_detached,
)
from .store import now_iso, queue_has_record

LINGER_S = 2.0  # an idle worker waits this long for more news before it exits
POLL_S = 0.05
LAG_WAIT_S = 1.5  # how long a Stop waits for its final answer to reach the transcript
MISSING_WAIT_S = 3.0  # how long an event waits for its transcript file to appear
BOOTSTRAP_QUEUE_WAIT_S = 30.0  # a bootstrap waits this long for another one's queue pass
RETRY_ON_NEWS_S = 5.0
TAKEOVER_WAIT_S = 60.0  # a taking-over worker waits this long for the running one to finish a request  # hook news is a reason to retry a failed server once the last try is this old


def settings_for_news(news: dict, base_env, state_dir: str) -> Settings:
    """The settings of the process that fired the event (per-project env), in our state folder."""
    # the worker's own secret stays (news files never hold one); a hook whose keys differ took over
    env = {k: v for k, v in base_env.items() if is_secret_setting(k) or not (k.startswith(SETTINGS_PREFIXES) or k in SETTINGS_NAMES)}
    env.update({k: v for k, v in news["env"].items() if isinstance(k, str) and isinstance(v, str)})
    ci = {k: v for k, v in (news.get("ci") or {}).items() if isinstance(k, str) and isinstance(v, str)}
    return load_settings(env)._replace(state_dir=state_dir, ci=ci)


class InboxRound(NamedTuple):
    handled: int  # events read into the queue
    waiting: bool  # some events wait for Claude Code (transcript not there yet, answer not flushed)
    settings: Settings | None  # those of the newest event handled: what the user runs with now


_STUCK: set = set()  # news files this process could not remove (reported once, then left alone)
_SAID: set = set()  # configuration problems this process has logged


def _received(news: dict) -> float:
    """When the hook wrote the news (epoch); 0 (= ready now) for a value that is not a sane time."""
    try:
        received = float(news.get("received") or 0)
    except (TypeError, ValueError, OverflowError):
        return 0.0
    return received if 0 <= received <= time.time() + 86400 else 0.0


def _drop_news(path: str, log) -> None:
    try:
        remove_news(path)
    except IsADirectoryError:
        _STUCK.add(path)
        log.error("%s is a folder, not a hook event: left alone; remove it (`rm -r %s`)", path, path)
    except OSError as e:
        _STUCK.add(path)
        log.error("could not remove the hook event %s after reading it: %s", path, access_advice(path, e))


def process_inbox(paths: Paths, log, base_env=None, final: bool = False) -> InboxRound:
    """Handle every news file that is ready (final: all of them, waiting for nothing)."""
    base_env = os.environ if base_env is None else base_env
    handled, waiting, newest = 0, False, None
    blocked: set = set()  # transcripts with a waiting event: their later events wait behind it
    try:
        names = list_news(paths.inbox)
    except OSError as e:
        if final:
            raise  # `drain`: says so and stops
        if paths.inbox not in _STUCK:
            _STUCK.add(paths.inbox)
            log.error("%s; hook events wait there", access_advice(paths.inbox, e))
        return InboxRound(0, False, None)
    for name in names:
        path = os.path.join(paths.inbox, name)
        if path in _STUCK:
            continue
        news = read_news(path)
        if news is None:
            log.error("inbox file %s is unreadable or not ours: removed (the transcript keeps the turns; the next event reads them)", path)
            _drop_news(path, log)
            continue
        try:
            if news.get("error"):
                raise BadEvent(news["error"])
            event = event_from_dict(news["event"])
        except BadEvent as e:
            log.error("ignored a hook call: %s", e)
            _drop_news(path, log)
            continue
        transcript = (event.session_id, event.transcript_path)
        if transcript in blocked:
            continue
        age = time.time() - _received(news)
        ready = final or age >= (LAG_WAIT_S if os.path.exists(event.transcript_path) else MISSING_WAIT_S)
        settings = settings_for_news(news, base_env, paths.dir)
        if settings.config_error and settings.config_error not in _SAID:
            _SAID.add(settings.config_error)  # once per worker, not every event (the hook no longer reads the settings)
            log.error("configuration: %s", settings.config_error)
        try:
            outcome = process_event(event, settings, log, final=ready)
        except Exception as e:  # one bad event never blocks the others
            log.exception(
                "could not read %s for the %s event of session %s: %s; the cursor stays, the next event retries",
                event.transcript_path,
                event.name,
                event.session_id,
                e,
            )
            outcome = None
        if outcome is not None and not outcome.done:
            blocked.add(transcript)
            waiting = True
            continue
        _drop_news(path, log)
        handled += 1
        newest = settings
    return InboxRound(handled, waiting, newest)


def queue_has_records(paths: Paths, log=None) -> bool:
    try:
        return queue_has_record(paths.queue)
    except FileNotFoundError:
        return False
    except OSError as e:
        if log is not None and paths.queue not in _STUCK:
            _STUCK.add(paths.queue)  # said once per worker, not every poll
            log.error("%s; the queue is kept", access_advice(paths.queue, e))
        return False


def sender_status(paths: Paths) -> dict:
    """The sender status file (back-off, last error), {} when there is none or it is not ours."""
    status = read_json_file(paths.sender_status, {})
    return status if isinstance(status, dict) else {}


def may_send(status: dict, settings: Settings, had_news: bool) -> bool:
    """Not while backing off, except: the keys changed, or hook news came and the last try is a few seconds old."""
    now = time.time()
    try:
        if now >= float(status.get("next_attempt_epoch") or 0):
            return True
        last = float(status.get("last_attempt_epoch") or 0)
    except (TypeError, ValueError):
        return True
    failed_keys = status.get("auth_failed_keys")
    if failed_keys and failed_keys != key_fingerprint(settings):
        return True
    return had_news and now - last >= RETRY_ON_NEWS_S


# Failures that waiting does not mend: keys refused or missing, no SDK (the user must act; a hook
# event with other keys, or `drain`, tries again). Every other failure is retried by the worker itself.
NO_SELF_RETRY_KINDS = ("auth", "nokeys", "nosdk")


def self_retry_epoch(status: dict, last_news: float, retry_for: float) -> float:
    """When the worker retries a failed send by itself (0: it does not, and exits when idle): at
    the end of the back-off, if that is within `retry_for` seconds of the last hook event it
    handled, and the failure is one that waiting can mend (the server down, 5xx, a timeout)."""
    err = status.get("last_error")
    if retry_for <= 0 or not isinstance(err, dict) or err.get("kind") in NO_SELF_RETRY_KINDS:
        return 0.0
    try:
        until = float(status.get("next_attempt_epoch") or 0)
    except (TypeError, ValueError):
        return 0.0
    return until if until - last_news <= retry_for else 0.0


def news_retry_epoch(status: dict) -> float:
    """When hook news may retry a failed server (see may_send): RETRY_ON_NEWS_S after the last try,
    or the end of the back-off if that comes first."""
    now = time.time()
    try:
        last = float(status.get("last_attempt_epoch") or 0)
        until = float(status.get("next_attempt_epoch") or 0)
    except (TypeError, ValueError):
        return now
    return max(now, min(until, last + RETRY_ON_NEWS_S))


class DeliveryThread:
    """Sends the queue beside the reading: a server that hangs for CC_LANGFUSE_TIMEOUT never
    keeps hook events from reaching the queue."""

    def __init__(self, settings: Settings, paths: Paths, log):
        import threading

        self.settings, self.paths, self.log = settings, paths, log
        self.kick = threading.Event()
        self.busy = self.stopping = self.news = False
        self.retry_at = 0.0  # a retry is due at this epoch (hook news during a back-off, or self_retry_epoch): the worker waits for it
        self.last_news = time.time()  # a worker starts for news
        self.thread = threading.Thread(target=self._run, name="delivery", daemon=True)
        self.thread.start()

    def nudge(self, settings: Settings, news: bool) -> None:
        self.settings = settings
        self.news = self.news or news
        if news:
            self.last_news = time.time()
        self.kick.set()

    def stop(self) -> None:
        self.stopping = True
        self.kick.set()
        self.thread.join()

    def _run(self) -> None:
        while not self.stopping:
            self.kick.wait(POLL_S * 4)
            self.kick.clear()
            if self.stopping:
                return
            # backing off: nothing to do, and not busy (an idle worker exits; a big queue is not
            # even looked at, which took a core with a large backlog behind a dead server)
            status = sender_status(self.paths)  # read once per round
            if not may_send(status, self.settings, self.news):
                if not queue_has_records(self.paths, self.log):
                    self.retry_at = 0.0
                elif self.news:
                    self.retry_at = news_retry_epoch(status)
                else:  # the last event's turns failed to send: retry by ourselves, the next event may be hours away
                    self.retry_at = self_retry_epoch(status, self.last_news, self.settings.retry_for)
                continue
            self.busy = True
            try:
                if not queue_has_records(self.paths, self.log):
                    self.news, self.retry_at = False, 0.0
                else:
                    self.news, self.retry_at = False, 0.0
                    summary = drain_queue(self.settings, self.log, keep_going=lambda: not self.stopping, yield_to_newer=True)
                    if summary.yielded:
                        self.kick.set()  # the next pass at once: the newer records first
                    if summary.sent or summary.dead or summary.stopped_by:
                        self.log.info(
                            "worker: %d sent, %d dead-lettered, %d kept%s",
                            summary.sent,
                            summary.dead,
                            summary.kept,
                            f" ({summary.stopped_by}, see the error above)" if summary.stopped_by else "",
                        )
            except Exception as e:  # the queue stays; the next event or `drain` retries
                self.log.exception("delivery failed: %s; the queue is kept", e)
            finally:
                self.busy = False


def run_worker(settings: Settings, paths: Paths, log, linger: float = LINGER_S, send: bool = True) -> None:
    """Inbox -> queue (this thread) and queue -> Langfuse (a delivery thread) until nothing has
    happened for `linger` seconds and no request is under way."""
    delivery = DeliveryThread(settings, paths, log) if send else None
    idle_since = time.monotonic()
    try:
        while True:
            if os.path.exists(paths.takeover):
                return  # a worker started with newer keys waits for our lock
            handled, waiting, newest = process_inbox(paths, log)
            if newest is not None and newest.enabled:
                settings = newest  # keys fixed since this worker started count at once
            if delivery is not None and (handled or not delivery.busy):
                delivery.nudge(settings, handled > 0)
            if handled or (delivery is not None and (delivery.busy or delivery.retry_at)):
                idle_since = time.monotonic()  # a retry is due (hook news asked for it, or a failure we retry by ourselves)
            elif not waiting and time.monotonic() - idle_since >= linger:
                return
            time.sleep(POLL_S)
    finally:
        if delivery is not None:
            delivery.stop()


def worker_main(settings: Settings, linger: float = LINGER_S, takeover: bool = False) -> int:
    """The detached worker: one per state folder; exits when idle.

    takeover: a hook whose keys differ from the running worker's started us; the running one
    sees the flag, finishes the record it is sending and exits, and we take the lock."""
    os.umask(0o077)
    log = get_logger(settings)
    paths = Paths(settings.state_dir)
    ensure_state_dir(paths.dir)
    os.chdir(paths.dir)  # not the user's project (it was the hook's working directory)
    lock = FileLock(paths.worker_lock, timeout=TAKEOVER_WAIT_S if takeover else 0)
    if takeover:
        write_atomic(paths.takeover, b"")
    acquired = lock.acquire(blocking=takeover)
    if takeover:
        remove_news(paths.takeover)
        if not acquired:
            log.warning("could not take over from the running worker within %.0fs; the next event tries again", TAKEOVER_WAIT_S)
    while acquired:
        try:
            write_atomic(paths.worker_keys, settings.sources_fingerprint.encode())
            update_sender_status(paths, pid=os.getpid(), running_since=now_iso())
            run_worker(settings, paths, log, linger)
            cache_bytecode(log)  # after the news is handled: never delays a turn
            facts.prune(paths)  # a month-old session's facts are never read again
        except Exception as e:  # a bug of ours: say so where `status` looks; nothing is lost
            log.exception(
                "the worker stopped on an unexpected error: %s; the events stay in the inbox and the queue is kept; "
                "the next hook event starts a new worker (or run `drain`)",
                e,
            )
            return 1
        finally:
            update_sender_status(paths, pid=None)
            lock.release()
        # A hook that wrote news while we held the lock started nobody: look again (unless a
        # newer worker is waiting for the lock: it reads the news).
        if os.path.exists(paths.takeover) or not list_news(paths.inbox):
            return 0
        acquired = lock.acquire(blocking=False)
    return 0


def bootstrap_main(settings: Settings, now: bool = False) -> int:
    """Plugin first use: queue the news, create the plugin's venv with the pinned SDK (once,
    lock-guarded), then hand over to a worker in that venv.

    A failed setup is recorded in the sender status file (status and doctor say why and how to
    fix it) and not tried again before its back-off is over (30 s, doubling, at most an hour;
    at once with another interpreter, or `bootstrap --now` run by hand)."""
    import subprocess

    os.umask(0o077)
    log = get_logger(settings)
    venv = plugin_venv()
    if not venv:
        log.error("bootstrap needs CLAUDE_PLUGIN_DATA (it runs only for the plugin install)")
        return 1
    paths = Paths(settings.state_dir)
    ensure_state_dir(paths.dir)
    # Two events close together can start two bootstraps (the second hook probed the lock before the
    # first bootstrap took it): the one without the lock waits for the other's queue pass, so no
    # venv build ever starts before the events that woke it are queued.
    worker_lock = FileLock(paths.worker_lock, timeout=BOOTSTRAP_QUEUE_WAIT_S)
    if worker_lock.acquire(blocking=True):
        try:
            run_worker(settings, paths, log, linger=0, send=False)  # the turns are safe in the queue meanwhile
        finally:
            worker_lock.release()
    os.makedirs(os.path.dirname(venv), exist_ok=True)
    lock = FileLock(os.path.join(os.path.dirname(venv), "bootstrap.lock"), timeout=0)
    if not lock.acquire(blocking=False):
        return 0  # another bootstrap is installing
    try:
        if not sender_python():
            if not now and bootstrap_waits(paths):
                return 0  # failed a moment ago: the events are queued meanwhile; status says when it tries again
            log.info("creating the plugin venv %s with %s (first use)", venv, " ".join(RUNTIME_REQUIREMENTS))
            stage = "venv"
            try:
                subprocess.run([sys.executable, "-I", "-m", "venv", venv], check=True, capture_output=True, timeout=300, cwd=paths.dir)
                stage = "pip"
                subprocess.run(
                    [
                        os.path.join(venv, "bin", "python"),
                        "-I",  # never the user's project on sys.path (a venv.py or pip.py there)
                        "-m",
                        "pip",
                        "install",
                        "--quiet",
                        "--disable-pip-version-check",
                        *RUNTIME_REQUIREMENTS,  # the SDK, and genai-prices for `models sync` / insights' local cost
                    ],
                    check=True,
                    capture_output=True,
                    timeout=900,
                    cwd=paths.dir,
                )
            except (OSError, subprocess.SubprocessError) as e:
                output = getattr(e, "stderr", b"") or getattr(e, "stdout", b"") or b""
                output = output.decode("utf-8", "replace") if isinstance(output, bytes) else str(output)
                detail = f"{e} {output.strip()[-500:]}".strip()
                if stage == "venv":
                    advice = VENV_ADVICE.format(python=sys.executable)
                else:
                    advice = PIP_ADVICE.format(requirement=" ".join(RUNTIME_REQUIREMENTS), venv=venv)
                note_bootstrap(paths, log, stage, f"could not create the plugin venv {venv}: {detail}", advice)
                return 1
            with open(os.path.join(venv, ".langfuse-ready"), "w") as f:
                f.write("\n".join(RUNTIME_REQUIREMENTS) + "\n")
            note_bootstrap(paths, log)  # a failure recorded before is over
    finally:
        lock.release()
    spawn_detached(entry_argv(os.path.join(venv, "bin", "python"), "worker"), log)
    return 0
