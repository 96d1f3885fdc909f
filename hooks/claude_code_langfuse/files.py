"""Locks, atomic writes and the state folder's layout. Imported by the hook: standard library only, nothing heavy."""

import errno
import fcntl
import os
import time

from .config import LOCK_TIMEOUT_S

# ============================================================================ locks, atomic files


class LockTimeout(Exception):
    pass


class FileLock:
    """An fcntl lock on a file; waits up to `timeout` seconds, never proceeds unlocked."""

    def __init__(self, path: str, timeout: float = LOCK_TIMEOUT_S):
        self.path, self.timeout = path, timeout
        self.fd: int | None = None

    def acquire(self, blocking: bool = True) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + (self.timeout if blocking else 0)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.fd = fd
                return True
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
            if time.monotonic() >= deadline:
                os.close(fd)
                return False
            time.sleep(0.01)

    def release(self) -> None:
        if self.fd is not None:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = None

    def __enter__(self):
        if not self.acquire():
            raise LockTimeout(self.path)
        return self

    def __exit__(self, *exc):
        self.release()


def write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written (a write may take only part of a large buffer)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_atomic(path: str, data: bytes) -> None:
    """tmp + fsync + rename: readers see the old file or the new one, never half of one."""
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    os.close(fd)
    os.replace(tmp, path)
    try:
        dfd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def read_json_file(path: str, default: object) -> object:
    import json  # not at module level: the hook imports this module and never reads JSON

    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return default
    except (OSError, ValueError):
        return default


def access_advice(path: str, error: OSError) -> str:
    """What to say when a file of ours cannot be read or written: why, and the way out."""
    why = error.strerror or str(error)
    owner = None
    for place in (path, os.path.dirname(path), os.path.dirname(os.path.dirname(path))):
        try:
            owner = os.stat(place).st_uid  # the file, or the folder that keeps us out of it
        except OSError:
            continue
        if owner != os.getuid():
            break
    state_dir = os.path.dirname(path.rstrip(os.sep)) or path
    if os.path.basename(state_dir) in ("locks", "inbox"):
        state_dir = os.path.dirname(state_dir)
    if owner is not None and owner != os.getuid():
        try:
            import pwd

            user = pwd.getpwuid(os.getuid()).pw_name
        except (ImportError, KeyError):
            user = str(os.getuid())
        return (
            f"cannot use {path}: {why}; it belongs to uid {owner}, not to you (uid {os.getuid()}): was a command run with sudo? "
            f"`sudo chown -R {user} {state_dir}` gives the state folder back; nothing in it is lost meanwhile"
        )
    return f"cannot use {path}: {why}; check the permissions of {state_dir} (`ls -la {state_dir}`); nothing in it is lost meanwhile"


class Paths:
    def __init__(self, state_dir: str):
        self.dir = state_dir
        self.state = os.path.join(state_dir, "langfuse_state.json")
        self.queue = os.path.join(state_dir, "pending_traces.jsonl")
        self.dead = os.path.join(state_dir, "dead_traces.jsonl")
        self.delivered = os.path.join(state_dir, "delivered_revs.json")  # key -> (rev, queued_at) Langfuse has, bounded
        self.sender_status = os.path.join(state_dir, "langfuse_sender.json")
        self.log = os.path.join(state_dir, "langfuse_hook.log")
        self.locks = os.path.join(state_dir, "locks")
        self.state_lock = os.path.join(self.locks, "state.lock")
        self.queue_lock = os.path.join(self.locks, "queue.lock")
        self.worker_lock = os.path.join(self.locks, "worker.lock")  # one worker per state folder
        self.inbox = os.path.join(state_dir, "inbox")
        self.worker_keys = os.path.join(self.locks, "worker.keys")  # key fingerprint of the running worker
        self.takeover = os.path.join(self.locks, "worker.takeover")  # a newer worker waits for the lock

    def session_lock(self, session_id: str) -> str:
        import hashlib  # not at module level: the hook imports this module and never needs it

        return os.path.join(self.locks, "session-" + hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()[:16] + ".lock")
