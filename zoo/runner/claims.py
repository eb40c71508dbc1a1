"""Leases on matrix cells, kept next to the results store, so any number of processes split one matrix.

A worker claims a cell before training it and keeps the claim alive with a heartbeat while it trains; a claim whose
heartbeat stopped for longer than its lease (a worker that was SIGKILLed, lost its node, hung its NFS mount) is taken
over by the next worker, together with the run's last checkpoint (it lives in the run dir, so `execute_run` resumes).

Layout: `<store_dir>/claims/<run_id>.json`, one small JSON file per claimed cell, every read-modify-write of that
directory done while holding one `filelock.FileLock` (`claims/.lock`, an fcntl/flock lock the kernel drops when its
holder dies, so a crashed worker never leaves the directory locked).

Time: a heartbeat's age is measured on the *filesystem's* clock, never against the reader's own wall clock. Each
heartbeat rewrites the claim file (its mtime is stamped by the machine that serves the file: the NFS server, the
local kernel), and "now" is the mtime of `claims/.clock`, which the reader rewrites under the lock just before
looking. Skew between worker hosts therefore does not shorten or lengthen a lease; only the mtime granularity
(1 s on some filesystems, hence MTIME_GRACE_S) does. The holder's own wall-clock times are recorded for people.

A claim of a process on *this* host (same hostname, boot and pid namespace) whose pid is gone, or belongs to a newer
process, is stale at once: a local worker killed with -9 is taken over without waiting for the lease.
"""
from __future__ import annotations

import _thread
import inspect
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from zoo.results import ResultsStore, RunRecord
from zoo.results.store import newest

LEASE_ENV = "ZOO_LEASE_S"
DEFAULT_LEASE_S = 120.0
MTIME_GRACE_S = 1.0  # coarse mtime granularity (ext3, some NFS servers): never expire a lease early
SETTLED_SINCE = ("finished", "diverged", "failed")  # a failure within this invocation is not retried by it
CLAIMS_DIR = "claims"


def default_lease_s() -> float:
    return float(os.environ.get(LEASE_ENV, DEFAULT_LEASE_S))


def _read_first_line(path: str) -> str:
    try:
        with open(path) as f:
            return f.readline().strip()
    except OSError:
        return ""


def host_identity() -> str:
    """hostname + boot id + pid namespace: equal only where a pid means the same process."""
    try:
        pid_ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pid_ns = ""
    return f"{socket.gethostname()}|{_read_first_line('/proc/sys/kernel/random/boot_id')}|{pid_ns}"


def _proc_stat(pid: int) -> list[str]:
    """Fields 3.. of /proc/PID/stat (state, ppid, ...); empty where there is no /proc."""
    stat = _read_first_line(f"/proc/{pid}/stat")
    return stat.rsplit(")", 1)[-1].split() if stat else []


def process_start(pid: int) -> str:
    """The kernel's start time of `pid` (field 22 of /proc/PID/stat), so a reused pid is not mistaken for ours."""
    stat = _proc_stat(pid)
    return stat[19] if len(stat) > 19 else ""


def pid_alive(pid: int, started: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    stat = _proc_stat(pid)
    if not stat:
        return True  # no /proc (macOS): the pid exists, trust it
    return stat[0] not in ("Z", "X") and (not started or stat[19] == started)  # a zombie is dead, not reaped


@dataclass(frozen=True)
class Holder:
    """What a claim file says: who holds the cell, since when (holder's clock, for people) and for how long."""

    run_id: str
    token: str
    host: str
    host_id: str
    pid: int
    proc_start: str
    lease_s: float
    started_at: float
    heartbeat_at: float
    label: str = ""

    @property
    def who(self) -> str:
        return f"{self.host}:{self.pid}"


@dataclass(frozen=True)
class ClaimState:
    holder: Holder | None  # None: the file is unreadable (then only its age counts)
    age_s: float  # since the last heartbeat, on the filesystem's clock
    live: bool
    reason: str  # "live", "lease expired", "holder process is gone", "unreadable"


@dataclass(frozen=True)
class StoreScan:
    """The results store seen by the claims, through its one reader and its one rule for "latest" (so a stalled
    former owner's `interrupted`, written after the new owner finished, never reopens the cell): each run's newest
    record, and its newest record among those appended after the invocation's offset."""

    latest: dict[str, RunRecord]
    since: dict[str, RunRecord]

    def status(self, run_id: str) -> str | None:
        """What this invocation last saw of the run, else what the store holds (None: never recorded)."""
        record = self.since.get(run_id) or self.latest.get(run_id)
        return record.status if record else None

    def settled(self, run_id: str) -> bool:
        latest, since = self.latest.get(run_id), self.since.get(run_id)
        return (latest is not None and latest.done) or (since is not None and since.status in SETTLED_SINCE)


def scan_results(store_dir: Path, since_offset: int | None = None) -> StoreScan:
    """One read of results.jsonl (`since_offset` None: no record counts as this invocation's)."""
    store = ResultsStore(store_dir)
    if since_offset is None:
        return StoreScan(store.latest(), {})
    every, fresh = store.split(since_offset)
    return StoreScan(newest(every), newest(fresh))


def results_offset(store_dir: Path) -> int:
    """Where the next record will start: cells settled by this invocation are the ones recorded after it."""
    return ResultsStore(store_dir).end_offset()


def _make_lock(path: Path, timeout: float) -> FileLock:
    # filelock >= 4 would silently fall back to a marker-file lock where flock is missing; a marker survives a
    # crash, so we refuse it and let the error say the filesystem has no working locks.
    params = inspect.signature(FileLock.__init__).parameters
    extra = {k: v for k, v in (("fallback_to_soft", False), ("preserve_lock_file", True)) if k in params}
    return FileLock(str(path), timeout=timeout, **extra)


class ClaimStore:
    """Claims for one results store. `lease_s`: how long a silent holder keeps its cell."""

    def __init__(self, store_dir: str | Path, lease_s: float | None = None, lock_timeout_s: float = 120.0):
        self.store_dir = Path(store_dir)
        self.dir = self.store_dir / CLAIMS_DIR
        self.lease_s = float(lease_s if lease_s is not None else default_lease_s())
        self._lock_path = self.dir / ".lock"
        self._lock_timeout_s = lock_timeout_s
        self._host_id = host_identity()

    # -- locking and the filesystem's clock
    def locked(self) -> FileLock:
        if not self.dir.is_dir():
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / ".gitignore").write_text("*\n")  # the store dir may be committed; claims never are
        return _make_lock(self._lock_path, self._lock_timeout_s)

    def fs_now(self) -> float:
        """'Now' on the clock that stamps claim files: write a file, read its mtime."""
        path = self.dir / ".clock"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, str(os.getpid()).encode())
            return os.fstat(fd).st_mtime
        finally:
            os.close(fd)

    def path(self, run_id: str) -> Path:
        return self.dir / f"{run_id}.json"

    # -- reading
    def state(self, run_id: str, now: float | None = None) -> ClaimState | None:
        try:
            # open first, then fstat: on NFS, open() revalidates the attributes (close-to-open consistency), so
            # the mtime is the server's current one rather than a cached, older one (which would age the claim)
            with open(self.path(run_id), "rb") as f:
                mtime = os.fstat(f.fileno()).st_mtime
                raw = f.read()
        except FileNotFoundError:
            return None
        try:
            holder: Holder | None = Holder(**json.loads(raw))
        except (ValueError, TypeError):
            holder = None  # torn by hand or by a foreign tool: only its age counts
        now = self.fs_now() if now is None else now
        age = max(0.0, now - mtime)
        if holder is None:
            return ClaimState(None, age, age <= self.lease_s + MTIME_GRACE_S, "unreadable")
        if holder.host_id == self._host_id and not pid_alive(holder.pid, holder.proc_start):
            return ClaimState(holder, age, False, "holder process is gone")
        if age > holder.lease_s + MTIME_GRACE_S:
            return ClaimState(holder, age, False, "lease expired")
        return ClaimState(holder, age, True, "live")

    def holders(self) -> dict[str, ClaimState]:
        """Every claim file and whether it is live (for progress views; no lock: a snapshot is enough)."""
        if not self.dir.is_dir():
            return {}
        now = self.fs_now()
        states = {p.stem: self.state(p.stem, now) for p in self.dir.glob("*.json")}
        return {k: v for k, v in states.items() if v is not None}

    def explain(self, run_id: str, since_offset: int | None = None) -> str:
        """Why `run_id` cannot be claimed now (or that it can)."""
        scan = scan_results(self.store_dir, since_offset)
        if scan.settled(run_id):
            return f"already {scan.status(run_id)} in the results store"
        st = self.state(run_id)
        if st is not None and st.live and st.holder is not None:
            return f"claimed by {st.holder.who} (heartbeat {st.age_s:.0f}s ago, lease {st.holder.lease_s:.0f}s)"
        return "claimable"

    # -- claiming
    def try_claim(self, run_id: str, label: str = "", since_offset: int | None = None) -> Claim | None:
        return self.claim_first([run_id], {run_id: label}, since_offset)

    def claim_first(
        self, run_ids: Sequence[str], labels: dict[str, str] | None = None, since_offset: int | None = None
    ) -> Claim | None:
        """Claim the first of `run_ids` that is neither settled in the results store nor held by a live claim.

        The store is re-read under the lock: a worker appends its record *before* releasing its claim, so a cell
        that another worker has just finished is never claimed again.
        """
        with self.locked():
            scan = scan_results(self.store_dir, since_offset)
            now = self.fs_now()
            for run_id in run_ids:
                if scan.settled(run_id):
                    continue
                st = self.state(run_id, now)
                if st is not None and st.live:
                    continue
                return self._write_new(run_id, (labels or {}).get(run_id, ""), taken_from=st)
        return None

    def _write_new(self, run_id: str, label: str, taken_from: ClaimState | None) -> Claim:
        now = time.time()
        holder = Holder(run_id=run_id, token=uuid.uuid4().hex, host=socket.gethostname(), host_id=self._host_id,
                        pid=os.getpid(), proc_start=process_start(os.getpid()), lease_s=self.lease_s,
                        started_at=now, heartbeat_at=now, label=label)
        self._write(holder)
        return Claim(self, holder, taken_from)

    def _write(self, holder: Holder) -> None:
        # temp file + rename: a reader never sees half a claim; the new file's mtime is the heartbeat
        tmp = self.dir / f".{holder.run_id}.{holder.token}.tmp"
        tmp.write_text(json.dumps(asdict(holder)))
        os.replace(tmp, self.path(holder.run_id))

    def _owned(self, holder: Holder) -> bool:
        try:
            return json.loads(self.path(holder.run_id).read_text()).get("token") == holder.token
        except (OSError, ValueError):
            return False


class Claim:
    """A held cell. Use as a context manager: a daemon thread renews the lease, the exit releases it.

    If a renewal finds the claim gone (the lease expired while this process was stalled and another worker took
    the cell), `lost` becomes True and `on_lost` runs — by default it interrupts the main thread, so two processes
    never keep training the same cell into the same run dir.
    """

    def __init__(self, store: ClaimStore, holder: Holder, taken_from: ClaimState | None = None):
        self.store = store
        self.holder = holder
        self.taken_from = taken_from  # the stale claim this one replaced, if any
        self.lost = False
        self.on_lost: Callable[[], None] = _thread.interrupt_main
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def run_id(self) -> str:
        return self.holder.run_id

    def renew(self) -> bool:
        """Push the heartbeat; False (and `lost`) when another worker owns the cell now."""
        if self.lost:
            return False
        with self.store.locked():
            if not self.store._owned(self.holder):
                self.lost = True
                return False
            self.holder = Holder(**{**asdict(self.holder), "heartbeat_at": time.time()})
            self.store._write(self.holder)
        return True

    def release(self) -> None:
        """Give the cell up (after its record is appended); a claim someone else took over is left alone."""
        self._stop.set()
        with self.store.locked():
            if not self.lost and self.store._owned(self.holder):
                self.store.path(self.run_id).unlink(missing_ok=True)

    def _beat(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                if not self.renew():
                    self.on_lost()
                    return
            except (Timeout, OSError):
                continue  # a slow or flaky lock: try again; the lease has slack for a few misses

    def __enter__(self) -> Claim:
        interval = max(0.2, self.holder.lease_s / 4)
        self._thread = threading.Thread(target=self._beat, args=(interval,), name=f"claim-{self.run_id}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.release()
