"""Hash upload body files while nginx is still writing them (issue 15): receive and hash overlap.

In the body-file variant (bodyfile.py) nginx proxies a blob upload only once it has written the whole
body to a file, so on its own the registry's sha256 pass and the commit's writeback start only after the
last byte arrived: a push costs "receive, then hash, then fsync" in sequence. This module runs one thread
that watches the body directory (Linux inotify, through ctypes: no dependency) and follows each new body
file as nginx writes it:

- every full window (`WINDOW`) nginx has written is hashed into a fresh sha256 hasher (over a read-only
  map of the page cache, as bodyfile does), on the other core while nginx receives the next bytes;
- its writeback is started early (`writeback.start`, never waits), since such a file is renamed into its
  upload as it is.

When the request reaches the registry, bodyfile.adopt `take`s the follow of its file (matched by device and
inode on its own descriptor, never by name) and hashes only what is left. The hash is the first and only
pass over those bytes. It is usable only for the *first* bytes of an upload (a monolithic push or a first
chunk: the upload's running hash is then the empty sha256); for any other body the follow is dropped and
the file hashed from the upload's state as before. Correctness never depends on this module: a body no
follow covers, a follow that fell behind, another algorithm, inotify missing: the file is hashed whole.

To not hash a later chunk for nothing (that would be a second hash pass), `expect_continuation` (from the
auth subrequest, before nginx reads a byte of the body) marks a pending request whose body continues an
upload; while any is pending, new files are not hashed ahead. The mark goes when its request arrives
(`arrived`) or after `HINT_TTL`. A wrong guess costs CPU, never a wrong digest.

Must not: write, rename or delete a body file; hold more than one window mapped per file; trust a name
(files are matched by inode on the caller's descriptor).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import hashlib
import logging
import mmap
import os
import pathlib
import select
import stat
import struct
import threading
import time

from dockyard_registry import digest, writeback

log = logging.getLogger(__name__)

WINDOW = 4 << 20  # hashed per step; a multiple of mmap.ALLOCATIONGRANULARITY
ALGORITHM = "sha256"  # the only one hashed ahead (every client's default)
HINT_TTL = 600.0  # seconds a continuation mark lives without its request arriving
IDLE_TTL = 120.0  # seconds a followed file may go unwritten and unclaimed before its follow is dropped
BATCH_PAUSE = 0.02  # seconds between looks while files are followed (at most 50 wake-ups a second)
_IN_MODIFY = 0x00000002
_IN_CREATE = 0x00000100
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")  # struct inotify_event without its name
_NAME_DIGITS = frozenset(b"0123456789")


@dataclasses.dataclass
class Ahead:
    """What a follow hashed of a body file: `hasher` holds bytes [0, offset) of it."""

    hasher: digest.Hasher
    offset: int


@dataclasses.dataclass
class _Follow:
    fd: int
    inode: tuple[int, int]
    hasher: digest.Hasher
    offset: int = 0
    kicked: int = 0
    seen: float = 0.0
    taken: bool = False
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def close(self) -> None:
        """Stop for good (idempotent; the caller holds `lock`)."""
        self.taken = True
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


def _inotify() -> tuple[ctypes.CDLL, int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
    except (OSError, AttributeError):
        return None
    return (libc, fd) if fd >= 0 else None


class Follower:
    """Follows the body files of one directory; `start`, then `take` from workers, `stop` at shutdown."""

    def __init__(self, directory: pathlib.Path) -> None:
        self.directory = directory
        self._follows: dict[str, _Follow] = {}  # by file name, only this thread adds
        self._by_inode: dict[tuple[int, int], _Follow] = {}
        self._lock = threading.Lock()
        self._pending: dict[str, list[float]] = {}  # continuation marks: upload path -> deadlines
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = -1, -1
        self._inotify = -1
        self._stopping = False
        self.hashed_ahead = 0  # bytes, for tests and logs

    # ------------------------------------------------------------------------------------ lifecycle
    def start(self) -> bool:
        """Start watching; False (and nothing runs) where inotify is unavailable."""
        found = _inotify()
        if found is None:
            log.info("no inotify here: upload bodies are hashed once complete")
            return False
        libc, fd = found
        watch = libc.inotify_add_watch(fd, os.fsencode(self.directory), _IN_CREATE | _IN_MODIFY)
        if watch < 0:
            os.close(fd)
            log.warning("cannot watch %s (%s): bodies hashed once complete", self.directory,
                        os.strerror(ctypes.get_errno()))  # fmt: skip
            return False
        self._inotify = fd
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._thread = threading.Thread(target=self._run, name="dockyard-bodyahead", daemon=True)
        self._thread.start()
        return True

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stopping = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        self._thread.join()
        self._thread = None
        for fd in (self._inotify, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        with self._lock:
            for follow in self._follows.values():
                with follow.lock:
                    follow.close()
            self._follows.clear()
            self._by_inode.clear()

    # ------------------------------------------------------------------------------ request side
    def expect_continuation(self, upload_path: str) -> None:
        """A request whose body continues an upload passed auth: hash no new file ahead until it arrives."""
        with self._lock:
            self._pending.setdefault(upload_path, []).append(time.monotonic() + HINT_TTL)

    def arrived(self, upload_path: str) -> None:
        """The request of one mark reached the registry (its body is complete)."""
        with self._lock:
            marks = self._pending.get(upload_path)
            if marks:
                marks.pop(0)
                if not marks:
                    del self._pending[upload_path]

    def take(self, fd: int) -> Ahead | None:
        """The hash of what was hashed ahead of the body file open on `fd` (the caller's descriptor), and
        stop following it; None when nothing was. Blocks at most for the window being hashed."""
        st = os.fstat(fd)
        with self._lock:
            follow = self._by_inode.pop((st.st_dev, st.st_ino), None)
        if follow is None:
            return None
        with follow.lock:
            offset, hasher = follow.offset, follow.hasher
            follow.close()
        if offset == 0 or offset > st.st_size:
            return None
        self.hashed_ahead += offset
        return Ahead(hasher=hasher, offset=offset)

    def progress(self) -> dict[str, int]:
        """Bytes hashed ahead so far per followed file name (tests wait on this instead of sleeping)."""
        with self._lock:
            return {name: follow.offset for name, follow in self._follows.items() if not follow.taken}

    # -------------------------------------------------------------------------------- the thread
    def _speculate(self) -> bool:
        now = time.monotonic()
        with self._lock:
            for path in [p for p, marks in self._pending.items() if all(d < now for d in marks)]:
                del self._pending[path]
            return not self._pending

    def _run(self) -> None:
        try:
            while not self._stopping:
                readable, _, _ = select.select([self._inotify, self._wake_r], [], [], IDLE_TTL / 4)
                if self._stopping:
                    return
                names = self._events() if self._inotify in readable else set()
                for name in names:
                    self._advance(name)
                self._expire()
                if self._follows:
                    # Let nginx write a few more of its 1 MiB writes before looking again: one wake-up
                    # per few MiB instead of one per write (whatever is not hashed ahead, the request
                    # hashes itself).
                    time.sleep(BATCH_PAUSE)
        except Exception:
            log.exception("following upload body files stopped; bodies are hashed once complete")

    def _events(self) -> set[str]:
        names: set[str] = set()
        while True:
            try:
                data = os.read(self._inotify, 64 * 1024)
            except BlockingIOError:
                return names
            at = 0
            while at + _EVENT.size <= len(data):
                _wd, mask, _cookie, length = _EVENT.unpack_from(data, at)
                raw = data[at + _EVENT.size : at + _EVENT.size + length].rstrip(b"\0")
                at += _EVENT.size + length
                if not raw or not set(raw) <= _NAME_DIGITS:
                    continue
                name = raw.decode()
                if mask & _IN_CREATE:
                    self._open(name)
                names.add(name)

    def _open(self, name: str) -> None:
        if not self._speculate():
            return  # a continuation may be pending: this file may not start an upload
        try:
            fd = os.open(self.directory / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            return
        follow = _Follow(fd=fd, inode=(st.st_dev, st.st_ino), hasher=hashlib.sha256(), seen=time.monotonic())
        with self._lock:
            old = self._follows.pop(name, None)
            self._follows[name] = follow
            self._by_inode[follow.inode] = follow
            if old is not None:
                self._by_inode.pop(old.inode, None)
        if old is not None:
            with old.lock:
                old.close()

    def _advance(self, name: str) -> None:
        """Hash the full windows nginx has written of one file since the last step, one window per lock
        hold (a take() waits for one window at most), then start their writeback."""
        follow = self._follows.get(name)
        if follow is None:
            return
        follow.seen = time.monotonic()
        while not self._stopping:
            with follow.lock:
                if follow.taken:
                    return
                try:
                    size = os.fstat(follow.fd).st_size
                except OSError:
                    return
                if size - follow.offset < WINDOW:
                    break
                with (
                    mmap.mmap(follow.fd, WINDOW, access=mmap.ACCESS_READ, offset=follow.offset) as mapped,
                    memoryview(mapped) as view,
                ):
                    follow.hasher.update(view)
                follow.offset += WINDOW
        with follow.lock:
            if not follow.taken and follow.offset - follow.kicked >= writeback.MIN_BYTES:
                writeback.start(follow.fd, follow.kicked, follow.offset - follow.kicked)
                follow.kicked = follow.offset

    def _expire(self) -> None:
        """Forget follows that were taken, whose file is gone (nginx removed it), or that nobody wrote or
        took for IDLE_TTL (a killed nginx's file)."""
        cutoff = time.monotonic() - IDLE_TTL
        with self._lock:
            follows = list(self._follows.items())
        for name, follow in follows:
            with follow.lock:
                gone = follow.taken or follow.seen < cutoff
                if not gone:
                    try:
                        gone = os.fstat(follow.fd).st_nlink == 0
                    except OSError:
                        gone = True
                if gone:
                    follow.close()
            if gone:
                with self._lock:
                    if self._follows.get(name) is follow:
                        del self._follows[name]
                    if self._by_inode.get(follow.inode) is follow:
                        del self._by_inode[follow.inode]
