"""One writer per output: an advisory lock file `<output>.lock` held for the whole run.

The lock is the kernel's `flock` on that file, so it dies with its process: a run killed by
a crash, `kill -9` or a lost node leaves the file behind but not the lock, and the next run
takes it over (its note names the process it replaces). A second writer while the first is
alive is refused at once, with the holder's pid, host and start time in the message. flock
also works on NFS (Linux emulates it with byte-range locks there).
"""

from __future__ import annotations

import fcntl
import os
import socket
from datetime import datetime, timezone

LOCK_SUFFIX = ".lock"


class OutputLocked(ValueError):
    """Another live process writes this output."""


def lock_path(output: str) -> str:
    return output + LOCK_SUFFIX


def _holder_line() -> str:
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return f"pid {os.getpid()} on {socket.gethostname()}, since {started}"


def _read_holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 4096).decode("utf-8", "replace").strip()


class OutputLock:
    """`with OutputLock(path):` holds `<path>.lock`; `taken_over` names a dead holder it replaced."""

    def __init__(self, output: str):
        self.output = output
        self.path = lock_path(output)
        self.taken_over: str | None = None
        self._fd: int | None = None

    def acquire(self) -> "OutputLock":
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd) or "another process"
                os.close(fd)
                raise OutputLocked(f"{self.output} is being written by {holder} (lock {self.path}); "
                                   "wait for that run to end or use another output") from None
            except OSError as e:
                os.close(fd)
                raise OutputLocked(f"cannot lock {self.path}: {e.strerror} (this filesystem may not support flock)") \
                    from None
            # The holder before us may have unlinked the file after we opened it: then our lock is on
            # a file nobody else will see, and we must lock the path's current file instead.
            try:
                same_file = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same_file = False
            if same_file:
                break
            os.close(fd)
        self.taken_over = _read_holder(fd) or None
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (_holder_line() + "\n").encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        # Unlink while still holding the lock, so nobody can lock the old file after we let go.
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def is_locked(output: str) -> str | None:
    """The holder's description when a live process writes `output`, else None (readers check this)."""
    path = lock_path(output)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd) or "another process"
        except OSError:
            return None  # no flock here: nothing can be known
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
