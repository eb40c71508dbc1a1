"""The matrix's run loop, shared by every way of running it: claim a cell, train it, record it, repeat.

Whether one `zoo.run`, N local workers, a SLURM job array or a mix of them work on a matrix, each process runs
`run_cells`: claim the next unsettled cell through the results store's claims (zoo/runner/claims.py), train it
with `execute_run` under a heartbeat, release the claim once its record is appended, and go on until every cell is
settled — finished or diverged at any time, or failed during this invocation (`since_offset`: a failure is not
retried by the invocation that saw it; the next invocation retries it, as before). Cells held by other live
workers are waited for, so a worker that dies mid-cell is replaced by whoever is still looping.
Under torchrun, rank 0 claims and broadcasts the cell; every rank trains it.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from zoo.results import ResultsStore, RunRecord
from zoo.results.store import newest
from zoo.runner.claims import SETTLED_SINCE, ClaimStore, scan_results
from zoo.runner.plan import RunSpec

DONE, WAIT = "<done>", "<wait>"


@dataclass(frozen=True)
class LoopOptions:
    since_offset: int  # results.jsonl size when this invocation started
    lease_s: float | None = None  # None: $ZOO_LEASE_S or the default
    poll_s: float | None = None  # wait between looks while other workers hold the remaining cells


@dataclass
class LoopReport:
    trained: list[RunRecord] = field(default_factory=list)  # records this process produced
    lost: list[str] = field(default_factory=list)  # run ids another worker took over from us


def _decide(claims: ClaimStore, order: Sequence[str], labels: dict[str, str], since: int):
    scan = scan_results(claims.store_dir, since)
    remaining = [rid for rid in order if not scan.settled(rid)]
    if not remaining:
        return DONE, None
    claim = claims.claim_first(remaining, labels, since)
    return (claim.run_id, claim) if claim else (WAIT, None)


def run_cells(
    todo: Sequence[RunSpec],
    ws,
    ctx,
    store,
    opts: LoopOptions,
    on_record: Callable[[RunRecord], None] | None = None,
    on_wait: Callable[[], None] | None = None,
    log: Callable[[str], None] = tqdm.write,
) -> LoopReport:
    """Train every cell of `todo` that no other worker trains; return once all of them are settled."""
    from zoo.runner.execute import execute_run  # heavy (torch); the parent of N workers never needs it
    from zoo.training.distributed import barrier, broadcast_object

    claims = ClaimStore(ws.store_dir, opts.lease_s)
    poll_s = opts.poll_s if opts.poll_s is not None else min(5.0, max(0.2, claims.lease_s / 4))
    by_id = {s.run_id: s for s in todo}
    labels = {rid: s.config.label for rid, s in by_id.items()}
    report = LoopReport()
    while True:
        run_id, claim = _decide(claims, list(by_id), labels, opts.since_offset) if ctx.is_main else ("", None)
        run_id = broadcast_object(ctx, run_id)  # under torchrun every rank trains rank 0's cell
        if run_id == DONE:
            return report
        if run_id == WAIT:
            if on_wait is not None:
                on_wait()
            time.sleep(poll_s)
            continue
        if claim is not None and claim.taken_from is not None:
            old = claim.taken_from.holder
            log(f"taking over {labels[run_id]} from {old.who if old else '?'} ({claim.taken_from.reason})")
        with claim if claim is not None else nullcontext():
            try:
                spec = by_id[run_id]
                blocked = spec.source.blocked if spec.source is not None else None
                record = not_run(spec, blocked, ctx, store) if blocked else execute_run(spec.run, ws, ctx, store)
            except KeyboardInterrupt:
                if claim is None or not claim.lost:
                    raise
                log(f"lost the claim on {labels[run_id]} to another worker (this process stalled past its lease)")
                report.lost.append(run_id)
                continue
        report.trained.append(record)
        if on_record is not None and ctx.is_main:
            on_record(record)
        barrier(ctx)


def not_run(spec: RunSpec, reason: str, ctx, store) -> RunRecord:
    """The record of a fine-tuning cell that cannot start (its init source failed): `failed`, with the reason, so
    the summary counts it and the next invocation tries it again (after its source)."""
    from datetime import datetime, timezone

    from zoo.runner.execute import new_record

    record = new_record(spec.run, ctx)
    record.status, record.error = "failed", reason
    record.finished_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if ctx.is_main:
        store.append(record)
    return record


@dataclass(frozen=True)
class Summary:
    """Where the cells of one invocation ended up."""

    cells: int
    finished: int
    diverged: int
    failed: int
    left: int
    wall_s: float

    @property
    def exit_code(self) -> int:
        return 1 if self.failed or self.left else 0

    def line(self, workers: int = 1) -> str:
        rate = 60 * (self.cells - self.left) / self.wall_s if self.wall_s > 0 else 0.0
        return (f"summary: {self.cells} cells: {self.finished} finished, {self.diverged} diverged, "
                f"{self.failed} failed, {self.left} left; {self.wall_s:.0f}s wall, {rate:.2f} cells/min, "
                f"{workers} worker{'s' if workers != 1 else ''}")


def summarize(run_ids: Sequence[str], store_dir: Path, since: int, wall_s: float) -> Summary:
    scan = scan_results(store_dir, since)
    status = {rid: scan.status(rid) for rid in run_ids}
    count = {s: sum(1 for rid in run_ids if status[rid] == s and scan.settled(rid)) for s in ("finished", "diverged",
                                                                                              "failed")}
    left = sum(1 for rid in run_ids if not scan.settled(rid))
    return Summary(len(run_ids), count["finished"], count["diverged"], count["failed"], left, wall_s)


class Progress:
    """One view of the whole matrix: cells settled (by anyone) / running / left, with tqdm's ETA.

    It reads the results store (through `ResultsStore`, with its rule for "latest") and the claims directory, so it
    shows the work of every worker — local children, separately started `zoo.run` processes, SLURM jobs — and
    prints one line per cell as it settles.

    A cell is followed by its planned run id: the parent plans on the machine its workers run on, so its ids are
    theirs. `by_label` follows cells by model/recipe/sampler/seed in this invocation's records instead, for the one
    parent that plans elsewhere: a SLURM login node (often GPU-less). A run id is a pure hash of the config resolved
    for the device and precision it trains with (AMP, bf16 or fp16, channels_last), which a GPU node decides and
    the login node cannot know, so there the ids do not agree and the label is the only shared name.
    """

    def __init__(self, todo: Sequence[RunSpec], store_dir: Path, since: int, enabled: bool = True,
                 by_label: bool = False):
        self.by_label = by_label
        self.keys = [s.config.label if by_label else s.run_id for s in todo]
        self.store = ResultsStore(store_dir)
        self.store_dir = Path(store_dir)
        self.since = since
        self.claims = ClaimStore(store_dir)
        self._offset = since
        self._seen: set[str] = set()
        self.bar = tqdm(total=len(self.keys), desc="matrix", unit="cell", disable=not enabled, dynamic_ncols=True)

    def _key(self, record: RunRecord) -> str:
        return record.label if self.by_label else record.run_id

    def settled(self) -> set[str]:
        if self.by_label:
            fresh = newest(self.store.since(self.since)[0], key=self._key)
            return {k for k in self.keys if k in fresh and fresh[k].status in SETTLED_SINCE}
        scan = scan_results(self.store_dir, self.since)
        return {k for k in self.keys if scan.settled(k)}

    def refresh(self) -> None:
        wanted = set(self.keys)
        fresh, self._offset = self.store.since(self._offset)
        for record in fresh:
            if self._key(record) in wanted and record.status != "interrupted":
                self.bar.write(record.one_line())
        settled = self.settled()
        self.bar.update(len(settled - self._seen))
        self._seen |= settled
        running = sum(1 for rid, st in self.claims.holders().items()
                      if st.live and st.holder is not None and (st.holder.label if self.by_label else rid) in wanted)
        self.bar.set_postfix_str(f"running {running}, left {max(0, len(self.keys) - len(settled) - running)}")

    def close(self) -> None:
        self.refresh()
        self.bar.close()


# ---------------------------------------------------------------------------------------- one worker process
FINALIZE_CLAIM = "_measure_and_leaderboard"  # one process measures and writes the board, the others skip it


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker process is told: which matrix, which subset, which invocation, which lease."""

    config: str
    only: tuple[str, ...] = ()
    since_offset: int = 0
    lease_s: float | None = None
    threads: int | None = None

    def argv(self) -> list[str]:
        """As `python -m zoo.run` arguments (a local worker child)."""
        out = [self.config, "--worker", "--since-offset", str(self.since_offset)]
        for item in self.only:
            out += ["--only", item]
        if self.lease_s is not None:
            out += ["--lease-s", str(self.lease_s)]
        if self.threads is not None:
            out += ["--threads", str(self.threads)]
        return out


def _raise_interrupt(signum, frame):  # SIGTERM (e.g. a cluster pre-emption) is recorded like Ctrl-C
    raise KeyboardInterrupt


def run_here(matrix, ws, plan: Sequence[RunSpec], since: int, *, lease_s: float | None, threads: int | None,
             worker: bool, handle_sigterm: bool = True, after: Callable[[], None] | None = None) -> int:
    """This process trains: claim and train cells until the matrix is settled (rank 0 claims under torchrun).

    Not a `worker` (a plain `zoo.run`): rank 0 also prints the plan, the progress view, the summary, and runs
    `after` (measurement, leaderboard). Returns the exit code: 0, 1 (a run failed or was left), 130 interrupted.
    """
    import signal

    # torch-heavy (plan and distributed import torch): deferred, the parent of N local workers never trains
    from zoo.results import ResultsStore
    from zoo.runner.plan import format_plan
    from zoo.training.distributed import init_distributed

    ctx = init_distributed(matrix.execution.device)
    threads = threads or matrix.execution.threads
    if threads and ctx.device.type == "cpu":
        import torch

        torch.set_num_threads(threads)
    if handle_sigterm:
        signal.signal(signal.SIGTERM, _raise_interrupt)
    todo = [spec for spec in plan if not spec.done]
    leader = ctx.is_main and not worker
    if leader:
        print(format_plan(plan), flush=True)
    progress = Progress(todo, ws.store_dir, since, enabled=matrix.execution.progress) if leader else None
    started = time.monotonic()
    try:
        run_cells(todo, ws, ctx, ResultsStore(ws.store_dir), LoopOptions(since, lease_s),
                  on_record=(lambda r: progress.refresh()) if progress else (lambda r: print(r.one_line(), flush=True)),
                  on_wait=progress.refresh if progress else None)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr, flush=True)
        return 130
    finally:
        if progress is not None:
            progress.close()
    summary = summarize([s.run_id for s in todo], ws.store_dir, since, time.monotonic() - started)
    if leader:
        print(summary.line(), flush=True)
        if after is not None:
            after()
    return summary.exit_code


def run_worker(spec: WorkerSpec, handle_sigterm: bool = True) -> int:
    """A worker from its spec alone (a SLURM task): load the matrix, plan as this node runs, train."""
    # torch-heavy, as in run_here
    from zoo.config import load_matrix
    from zoo.results import ResultsStore
    from zoo.runner.plan import build_plan
    from zoo.runner.workspace import workspace_for

    matrix = load_matrix(spec.config)
    ws = workspace_for(matrix, Path.cwd())
    plan = build_plan(matrix, ResultsStore(ws.store_dir), list(spec.only))  # world size: torchrun's/submitit's env
    return run_here(matrix, ws, plan, spec.since_offset, lease_s=spec.lease_s, threads=spec.threads, worker=True,
                    handle_sigterm=handle_sigterm)


def finalize(matrix, ws, *, measure: bool, leaderboard: bool, lease_s: float | None = None) -> None:
    """Measurement and the leaderboard read the store, so they also cover runs of earlier invocations.

    Several `zoo.run` processes finishing one matrix together would all get here: the first to claim
    FINALIZE_CLAIM does the work, the others say so and skip it.
    """
    measure = measure and matrix.measure.enabled
    if not measure and not leaderboard:
        return
    claim = ClaimStore(ws.store_dir, lease_s).try_claim(FINALIZE_CLAIM, "measure + leaderboard")
    if claim is None:
        print("another zoo.run is measuring and writing the leaderboard of this store: skipping it here")
        return
    with claim:
        if measure:  # measure and report import torch and every runtime: deferred, as in run_here
            from zoo.measure.runs import measure_matrix

            measure_matrix(matrix, ws.store_dir, ws.output_dir)
        if leaderboard:
            from zoo.report.leaderboard import write_leaderboard

            path = write_leaderboard(ws.store_dir, title=matrix.name, wandb=matrix.wandb, wandb_dir=ws.output_dir,
                                     classification_store=matrix.classification_store)
            print(f"leaderboard: {path}")
