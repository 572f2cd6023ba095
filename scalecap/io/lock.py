"""One writer per output: an exclusive OS lock held for the whole run.

Two runs on one output would caption everything twice, write the same shard ``.tmp`` file and
compact a journal under the other's appends. So a run takes ``flock(LOCK_EX | LOCK_NB)`` on a lock
file of its output (``OUTDIR/.scalecap.lock``, or ``RUN.jsonl.lock`` beside a JSONL output) before
it reads or deletes anything, and a second run is refused at once with the holder's pid.

Stale locks are harmless by construction: the kernel drops a ``flock`` when its process dies
(``kill -9`` included), and a lock file that stays behind is only a name. The file is never
deleted (deleting it would let a third process lock a new inode while a second still waits on the
old one). ``flock`` works between processes on one machine; on NFS it depends on the server (Linux
clients emulate it with POSIX locks), so machines sharing one output should use ``--shard`` and
separate outputs.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

LOCK_NAME = ".scalecap.lock"


class OutputLocked(RuntimeError):
    """Another process is writing this output."""


class OutputLock:
    """``with OutputLock(path): ...`` holds the lock; ``probe()`` checks it is free without keeping it."""

    def __init__(self, path: Path, output: Path | None = None) -> None:
        self.path = Path(path)
        self.output = Path(output) if output is not None else self.path.parent
        self._fd: int | None = None

    def acquire(self) -> "OutputLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise OutputLocked(f"{self.output} is being written by another scalecap run ({holder}); "
                               "wait for it to finish, or write to another output") from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                     f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def probe(self) -> None:
        """Refuse now (``OutputLocked``) if another process holds the lock: the CLI calls this
        before loading any model; the run itself takes the lock for real. Creates nothing: no lock
        file means no holder."""
        if self.path.exists():
            self.acquire().release()

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "holder unknown"
