"""The W&B sink: one W&B run per training run, offline unless configured online, never fatal.

The results store is the source of truth; W&B is a view of it. So every failure inside wandb (no network, a bad
key, an init timeout, any exception) warns once and turns the sink into a no-op, and training goes on.

    sink = WandbSink.open(project="zoo", entity=None, group="digits", name="mobilevit_xs-basic", tags=[...],
                          config={...}, mode="offline", dir="out/default")
    sink.log({"train/loss": 0.7}, step=10)
    sink.summary({"top1": 71.2})
    sink.finish(exit_code=0)

Modes: "online" only when a W&B API key is configured (otherwise offline, with a warning: an interactive login
prompt would hang a batch job); "offline" writes `<dir>/wandb/offline-run-*/run-<id>.wandb` (read it back with
`zoo.tracking.offline`, upload later with `wandb sync`); "disabled" does not touch wandb at all. WANDB_MODE=offline
or =disabled in the environment can only lower the mode, never raise it.

A resumed run (`resume_id`) in offline mode gets a new `offline-run-<time>-<id>` folder: wandb 0.31 never reads
the earlier ones back, so a damaged earlier file (truncated, zero-length, garbage) cannot stop it. Each such earlier
file is named in a warning, because `wandb sync` of it uploads at most its readable part.

Under a W&B sweep agent (`wandb agent` sets WANDB_SWEEP_ID) a run must reach the server, so "offline" becomes
"online"; `sweep_params()` returns the point the agent chose.
"""
from __future__ import annotations

import netrc
import os
import warnings
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

Mode = Literal["online", "offline", "disabled"]
_MODE_RANK = {"disabled": 0, "offline": 1, "online": 2}
DEFAULT_INIT_TIMEOUT_S = 30.0  # wandb's own default (90 s) is a long stall per matrix cell when offline-by-accident
DEFAULT_FINISH_TIMEOUT_S = 120.0  # online: give up uploading after this, the files stay on disk for `wandb sync`
FLUSH_TIMEOUT_S = 10.0  # offline: how long finish() waits for wandb-core to write the run file out


def api_key_configured() -> bool:
    """A key in WANDB_API_KEY or in ~/.netrc for the configured host, i.e. `wandb.init` will not prompt."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def in_sweep_agent() -> bool:
    return bool(os.environ.get("WANDB_SWEEP_ID"))


def effective_mode(requested: str) -> Mode:
    """The mode the sink really uses, after the environment and the sweep agent have had their say."""
    if requested not in _MODE_RANK:
        raise ValueError(f"wandb mode {requested!r}: allowed online, offline, disabled")
    mode: str = requested
    if mode == "offline" and in_sweep_agent():
        mode = "online"
    env_mode = os.environ.get("WANDB_MODE", "")
    env_mode = "offline" if env_mode == "dryrun" else env_mode  # wandb's old name for offline
    if env_mode in ("offline", "disabled") and _MODE_RANK[env_mode] < _MODE_RANK[mode]:
        mode = env_mode
    if mode == "online" and not api_key_configured():
        warnings.warn("W&B: mode online but no API key (WANDB_API_KEY or ~/.netrc); logging offline", RuntimeWarning,
                      stacklevel=3)
        mode = "offline"
    return mode  # type: ignore[return-value]


def sweep_params() -> dict[str, Any]:
    """The hyper-parameters a W&B sweep agent chose for this process ({} when not under an agent).

    In-process agents (`wandb.agent(function=...)`) have already called `wandb.init`: read `wandb.config`. The
    command-line agent also passes the point as `--key=value` arguments and in the yaml file named by
    WANDB_SWEEP_PARAM_PATH, which is read here (with wandb's reader) without starting a run.
    """
    try:
        import wandb

        run = wandb.run
        if run is not None and (in_sweep_agent() or getattr(run, "sweep_id", None)):
            return {k: v for k, v in dict(run.config).items() if not k.startswith("_")}
    except Exception as err:  # a broken wandb must not stop a training run
        warnings.warn(f"W&B: could not read wandb.config: {err}", RuntimeWarning, stacklevel=2)
        return {}
    param_path = os.environ.get("WANDB_SWEEP_PARAM_PATH")
    if not in_sweep_agent() or not param_path or not Path(param_path).is_file():
        return {}
    try:
        from wandb.sdk.lib.config_util import dict_from_config_file  # the agent's own format and reader

        return {k: v for k, v in (dict_from_config_file(param_path) or {}).items() if not k.startswith("_")}
    except Exception as err:
        warnings.warn(f"W&B: could not read the sweep point {param_path}: {err}", RuntimeWarning, stacklevel=2)
        return {}


def damaged_offline_files(dir: Path, run_id: str) -> list[tuple[Path, str]]:
    """Offline run files of `run_id` under `dir`/wandb that do not read back whole, with why (framing only: no
    protobuf decoding, so a resume reads each earlier file once, quickly)."""
    # offline.py imports wandb's protobuf: deferred, like every wandb import here (mode `disabled` loads none)
    from zoo.tracking.offline import ScanState, WandbFileError, iter_record_bytes

    damaged = []
    for path in sorted((dir / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")):
        state = ScanState()
        try:
            with path.open("rb") as stream:
                for _ in iter_record_bytes(stream, str(path), state):
                    pass
        except (WandbFileError, OSError) as err:
            damaged.append((path, str(err).removeprefix(f"{path}: ")))
            continue
        if state.skipped_chunks:
            damaged.append((path, f"{state.skipped_chunks} chunk(s) fail their checksum"))
        elif state.torn:
            damaged.append((path, "it ends mid-record: killed while writing, or a truncated copy"))
    return damaged


class WandbSink:
    """A W&B run that can fail without taking training down. Build it with `WandbSink.open(...)`."""

    def __init__(self, run: Any = None, mode: Mode = "disabled", owns_run: bool = True) -> None:
        self._run = run
        self.mode: Mode = mode if run is not None else "disabled"
        self._owns_run = owns_run  # False when we joined a run an in-process sweep agent started
        self._failed = False

    # ----------------------------------------------------------------------------------------------- lifecycle
    @classmethod
    def open(
        cls,
        *,
        project: str,
        entity: str | None,
        group: str | None,
        name: str,
        tags: list[str],
        config: dict[str, Any],
        mode: str,
        dir: str,
        job_type: str = "train",
        resume_id: str | None = None,
        init_timeout: float = DEFAULT_INIT_TIMEOUT_S,
    ) -> WandbSink:
        """Start a W&B run (or a no-op sink if W&B is disabled or fails to start)."""
        resolved = effective_mode(mode)
        if resolved == "disabled":
            return cls()
        try:
            import wandb

            if in_sweep_agent() and wandb.run is not None:
                # An in-process agent already started this point's run: log into it, let the agent finish it.
                wandb.run.config.update(config, allow_val_change=True)
                return cls(wandb.run, resolved, owns_run=False)
            Path(dir).mkdir(parents=True, exist_ok=True)
            if resolved == "offline" and resume_id:
                for path, reason in damaged_offline_files(Path(dir), resume_id):
                    warnings.warn(f"W&B: earlier offline run file {path} is damaged ({reason}); this run is logged "
                                  "to a new offline run folder beside it (`wandb sync` of the damaged one uploads at "
                                  "most its readable part)", RuntimeWarning, stacklevel=2)
            settings = wandb.Settings(
                init_timeout=init_timeout,
                finish_timeout=DEFAULT_FINISH_TIMEOUT_S if resolved == "online" else 0.0,
                console="off",  # no stdout capture: progress bars stay clean and wandb adds no output
                silent=True,
                save_code=False,
                disable_code=True,
                reinit="create_new",  # independent runs: one per matrix cell, several per process
            )
            run = wandb.init(
                project=project,
                entity=entity,
                group=group,
                name=name,
                tags=list(tags),
                config=config,
                job_type=job_type,
                mode=resolved,
                dir=dir,
                # A sweep agent names the run (WANDB_RUN_ID); resuming our own id would fight it.
                id=None if in_sweep_agent() else resume_id,
                resume="allow" if resume_id and not in_sweep_agent() else None,
                settings=settings,
            )
        except Exception as err:
            warnings.warn(f"W&B: could not start a run ({type(err).__name__}: {err}); training goes on without it",
                          RuntimeWarning, stacklevel=2)
            return cls()
        return cls(run, resolved)

    def finish(self, exit_code: int = 0) -> None:
        """End the run (exit_code != 0 marks it failed in W&B). Safe to call twice."""
        run, self._run = self._run, None
        if run is None or not self._owns_run:
            return
        try:
            sync_dir = Path(run.settings.sync_dir)
            run.finish(exit_code=exit_code)
            if self.mode == "offline":
                self._wait_for_run_file(sync_dir)
        except Exception as err:
            self._warn(err)

    @staticmethod
    def _wait_for_run_file(sync_dir: Path) -> None:
        """wandb-core flushes the run file just after finish() returns; wait so a reader sees the whole run."""
        from zoo.tracking.offline import wait_until_finished  # wandb's protobuf: deferred (see above)

        if not wait_until_finished(sync_dir, timeout_s=FLUSH_TIMEOUT_S).finished:
            raise TimeoutError(f"{sync_dir}: the run file has no exit record {FLUSH_TIMEOUT_S:.0f} s after finish")

    def __enter__(self) -> WandbSink:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.finish(exit_code=0 if exc_type is None else 1)

    # ----------------------------------------------------------------------------------------------- properties
    @property
    def active(self) -> bool:
        return self._run is not None

    @property
    def run_id(self) -> str | None:
        return self._call(lambda run: run.id)

    @property
    def run_dir(self) -> Path | None:
        """The run's folder (`.../wandb/offline-run-<time>-<id>`), holding `run-<id>.wandb` and files/."""
        return self._call(lambda run: Path(run.settings.sync_dir))

    @property
    def url(self) -> str | None:
        return self._call(lambda run: run.url) if self.mode == "online" else None

    # ----------------------------------------------------------------------------------------------- logging
    def log(self, metrics: dict[str, Any], step: int) -> None:
        self._call(lambda run: run.log(metrics, step=step))

    def summary(self, metrics: dict[str, Any]) -> None:
        self._call(lambda run: run.summary.update(metrics))

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]], step: int | None = None) -> None:
        def send(run: Any) -> None:
            import wandb

            run.log({key: wandb.Table(columns=list(columns), data=[list(r) for r in rows])}, step=step)

        self._call(send)

    def log_image(self, key: str, path: str | Path, caption: str | None = None, step: int | None = None) -> None:
        def send(run: Any) -> None:
            import wandb

            run.log({key: wandb.Image(str(path), caption=caption)}, step=step)

        self._call(send)

    # ----------------------------------------------------------------------------------------------- internals
    def _call(self, action: Any) -> Any:
        if self._run is None:
            return None
        try:
            return action(self._run)
        except Exception as err:
            self._warn(err)
            self._abandon()
            return None

    def _warn(self, err: Exception) -> None:
        if not self._failed:
            self._failed = True
            warnings.warn(f"W&B: {type(err).__name__}: {err}; the rest of this run is not logged to W&B",
                          RuntimeWarning, stacklevel=4)

    def _abandon(self) -> None:
        """Stop using a run that failed; try to close it so its files are flushed, but never raise."""
        run, self._run = self._run, None
        if run is not None and self._owns_run:
            try:
                run.finish(exit_code=1)
            except Exception:
                pass
