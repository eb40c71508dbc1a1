"""`python -m zoo.sweep sweeps/x.yaml --local [--count N] [--seed S] [--dry-run]`: run a W&B sweep file here.

Against a server, the same file runs the usual way (`wandb sweep sweeps/x.yaml`, then `wandb agent ID`): the agent
builds each run's command from the file's `command:` list and runs `python -m zoo.train --key=value ...`.
Without a server (sweeps always need one), `--local` walks the file's grid or random search here and runs the
very command the agent would, one point after another, so every point becomes a plain run in the results store.

`agent_command` reproduces the agent's macro rules (wandb 0.31 `wandb_agent.py`): a command element that is
exactly `${name}` expands to a list of arguments (`${env}` -> /usr/bin/env, `${interpreter}` -> python,
`${program}`, `${args}` -> `--key=value` with Python `str()` values, `${args_no_hyphens}`,
`${args_no_boolean_flags}`, `${args_json}`, `${args_json_file}`, ...; unknown ones expand to nothing), and
`${envvar:NAME}` inside any element is replaced by the variable (by its name when unset, as the agent does).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.sweeps.spec import MetricSpec, ParamSpec, SweepSpec, iterate_points, load_sweep, parse_sweep
from zoo.config.recipes import REPO_ROOT
from zoo.config.typed import ConfigError
from zoo.sweeps.from_matrix import write_sweep_from_matrix

__all__ = [
    "MetricSpec", "ParamSpec", "SweepSpec", "PointResult", "agent_args", "agent_command", "iterate_points",
    "load_sweep", "parse_sweep", "run_local", "main",
]

ENVVAR_MACRO = re.compile(r"\$\{envvar:([A-Z0-9_]*)\}")  # the agent's own pattern: upper-case names only
MAX_INITIAL_FAILURES = 3  # the agent gives up when its first runs all fail; so do we


def agent_args(point: Mapping[str, Any]) -> dict[str, list[str]]:
    """The agent's argument spellings for one point (wandb's `create_sweep_command_args`, called directly)."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    spellings = create_sweep_command_args({"args": {k: {"value": v} for k, v in point.items()}})
    spellings.pop("args_dict", None)  # a dict, not a macro expansion
    return spellings


def agent_command(
    spec: SweepSpec,
    point: Mapping[str, Any],
    interpreter: str = "python",
    env: Mapping[str, str] | None = None,
    args_json_file: str | Path | None = None,
) -> list[str]:
    """The argv `wandb agent` would run for `point` (`interpreter` is literally "python" for the real agent)."""
    env = os.environ if env is None else env
    macros: dict[str, list[str]] = dict(agent_args(point))
    macros.update(env=["/usr/bin/env"], interpreter=[interpreter])
    if spec.program is not None:
        macros["program"] = [spec.program]
    if "${args_json_file}" in spec.command:
        if args_json_file is None:
            raise ValueError("this sweep's command uses ${args_json_file}: pass args_json_file=<path> to write to")
        macros["args_json_file"] = [str(args_json_file)]
    argv: list[str] = []
    for element in spec.command:
        element = ENVVAR_MACRO.sub(lambda m: env.get(m.group(1), m.group(1)), element)
        if element.startswith("${") and element.endswith("}"):
            argv += macros.get(element[2:-1]) or []
        else:
            argv.append(element)
    return argv


@dataclass(frozen=True)
class PointResult:
    index: int
    point: dict[str, Any]
    command: list[str]
    returncode: int | None  # None: not run (dry run, or stopped after repeated failures)


def run_subprocess(command: list[str]) -> int:
    """Default runner: the command as a child process, with this checkout importable (`-m zoo.train`)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(command, env=env, check=False).returncode


def run_local(
    spec_path: str | Path,
    count: int | None = None,
    seed: int = 0,
    runner: Callable[[list[str]], int] | None = None,
    *,
    dry_run: bool = False,
    interpreter: str = sys.executable,
    log: Callable[[str], None] | None = None,
) -> list[PointResult]:
    """Run a sweep file's points one by one, as the agent would; a failed point is recorded and the sweep goes on.

    Stops early (like the agent) when the first MAX_INITIAL_FAILURES points all fail: the command itself is broken.
    """
    spec = load_sweep(spec_path)
    runner = runner or run_subprocess
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    points = list(iterate_points(spec, count=count, seed=seed))
    if spec.early_terminate:
        log(f"[sweep] {spec.source}: early_terminate is applied by the W&B server only; local points run fully")
    results: list[PointResult] = []
    with tempfile.TemporaryDirectory(prefix="zoo-sweep-") as scratch:
        for index, point in enumerate(points):
            json_file = Path(scratch) / f"config-{index}.json"
            command = agent_command(spec, point, interpreter=interpreter, args_json_file=json_file)
            if "${args_json_file}" in spec.command:
                json_file.write_text(agent_args(point)["args_json"][0])
            broken = index >= MAX_INITIAL_FAILURES and all(
                r.returncode not in (0, None) for r in results[:MAX_INITIAL_FAILURES]
            )
            if broken and index == MAX_INITIAL_FAILURES:
                log(f"[sweep] the first {MAX_INITIAL_FAILURES} points all failed: not running the rest")
            if not broken:
                log(f"[sweep {index + 1}/{len(points)}] {' '.join(command)}")
            code = None if dry_run or broken else runner(command)
            results.append(PointResult(index, point, command, code))
            if code not in (0, None):
                log(f"[sweep {index + 1}/{len(points)}] failed with exit code {code}; going on")
    return results


def _server_instructions(path: str, spec: SweepSpec) -> str:
    where = f"{spec.entity or 'ENTITY'}/{spec.project or 'PROJECT'}"
    return (
        f"{path}: a W&B {spec.method} sweep over {', '.join(spec.parameter_names)}"
        + (f", optimising {spec.metric.name} ({spec.metric.goal})" if spec.metric else "")
        + ".\nWith a W&B server (activate the venv first: the agent runs `python`):\n"
        f"  wandb sweep {path}                 # prints the sweep id\n"
        f"  wandb agent {where}/SWEEP_ID [--count N]\n"
        "Without one:\n"
        f"  python -m zoo.sweep {path} --local [--count N] [--seed S] [--dry-run]\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_file", nargs="?")
    parser.add_argument("--from-matrix", metavar="RUNS_YAML", default=None,
                        help="write a grid sweep over the matrix's cells (see zoo.sweeps.from_matrix)")
    parser.add_argument("-o", "--output", default=None, help="with --from-matrix: where (sweeps/matrix_<name>.yaml)")
    parser.add_argument("--only", action="append", metavar="KEY=VALUE[,VALUE]", help="with --from-matrix: a subset")
    parser.add_argument("--local", action="store_true", help="run the search here, without a W&B server")
    parser.add_argument("--count", type=int, default=None, help="at most N points (required for random)")
    parser.add_argument("--seed", type=int, default=0, help="random search seed")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args(argv)
    if args.from_matrix:
        return _from_matrix(args)
    if not args.sweep_file:
        parser.error("a sweep file (or --from-matrix RUNS_YAML) is required")
    try:
        spec = load_sweep(args.sweep_file)
        if not args.local:
            print(_server_instructions(args.sweep_file, spec), end="")
            return 0
        results = run_local(args.sweep_file, count=args.count, seed=args.seed, dry_run=args.dry_run)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    failed = [r for r in results if r.returncode not in (0, None)]
    skipped = [r for r in results if r.returncode is None]
    if not args.dry_run:
        print(f"[sweep] {len(results) - len(failed) - len(skipped)} finished, {len(failed)} failed"
              + (f", {len(skipped)} not run after {MAX_INITIAL_FAILURES} initial failures" if skipped else ""),
              file=sys.stderr)
    return 1 if failed or (skipped and not args.dry_run) else 0


def _from_matrix(args: argparse.Namespace) -> int:
    try:
        path, cells = write_sweep_from_matrix(args.from_matrix, args.output, args.only)
        spec = load_sweep(path)  # what we wrote must be a valid sweep file
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}: {cells} cells, one grid point each\n" + _server_instructions(str(path), spec), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
