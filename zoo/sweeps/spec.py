"""W&B sweep files as typed objects, and the grid/random search over them without a server.

The file format is W&B's own (https://docs.wandb.ai/guides/sweeps/sweep-config-keys), so one file serves both
`wandb sweep sweeps/x.yaml` and `python -m zoo.sweep sweeps/x.yaml --local`. The local search follows the W&B
sweep engine's rules so a file means the same thing in both places:

- distribution inference: `value` -> constant, `values` -> categorical (with `probabilities`: weighted),
  `min`/`max` both integers -> int_uniform, otherwise uniform; `parameters` -> a nested group whose value is a dict;
- grid: parameters in sorted name order (nested names sort by path), the cartesian product with the last
  parameter varying fastest; int_uniform expands to min..max inclusive, q_uniform to min, min+q, ... < max
  (numpy.arange semantics, like the engine); continuous distributions are an error under grid;
- random: each parameter drawn independently; `log_uniform` takes natural-log bounds, `*_values` takes the values.

`bayes` needs the W&B server's optimiser: it validates here but cannot run locally. The `sweeps` engine package
(wandb/sweeps on PyPI) is not used because it pins numpy<2, which this stack's torch/timm cannot take.
"""
from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from zoo.config.typed import ConfigError

METHODS = ("grid", "random", "bayes")
TOP_LEVEL_KEYS = (
    "apiVersion", "command", "controller", "description", "early_terminate", "entity", "image_uri", "imageUri",
    "job", "kind", "method", "metric", "name", "parameters", "program", "project", "run_cap", "scheduler",
)
METRIC_KEYS = ("name", "goal", "target", "impute", "impute_while_running")
PARAM_KEYS = ("value", "values", "probabilities", "distribution", "min", "max", "q", "mu", "sigma", "a", "b")
DISTRIBUTIONS = (
    "constant", "categorical", "int_uniform", "uniform", "q_uniform", "log_uniform", "log_uniform_values",
    "q_log_uniform", "q_log_uniform_values", "inv_log_uniform", "inv_log_uniform_values", "normal", "q_normal",
    "log_normal", "q_log_normal", "beta", "q_beta",
)
GRID_DISTRIBUTIONS = ("constant", "categorical", "int_uniform", "q_uniform")
BOUNDED = ("int_uniform", "uniform", "q_uniform", "log_uniform", "log_uniform_values", "q_log_uniform",
           "q_log_uniform_values", "inv_log_uniform", "inv_log_uniform_values")
POSITIVE_BOUNDS = ("log_uniform_values", "q_log_uniform_values", "inv_log_uniform_values")
DEFAULT_COMMAND = ("${env}", "${interpreter}", "${program}", "${args}")


@dataclass(frozen=True)
class ParamSpec:
    """One leaf parameter; `path` has more than one part inside a nested `parameters:` group."""

    path: tuple[str, ...]
    distribution: str
    value: Any = None
    values: tuple[Any, ...] = ()
    probabilities: tuple[float, ...] | None = None
    min: float | None = None
    max: float | None = None
    q: float = 1.0
    mu: float = 0.0
    sigma: float = 1.0
    a: float = 1.0
    b: float = 1.0

    @property
    def name(self) -> str:
        return ".".join(self.path)

    def grid_values(self) -> list[Any]:
        if self.distribution == "constant":
            return [self.value]
        if self.distribution == "categorical":
            return list(self.values)
        if self.distribution == "int_uniform":
            return list(range(int(self.min), int(self.max) + 1))
        # q_uniform, as numpy.arange(min, max, q): `max` itself is excluded.
        steps = max(0, math.ceil((self.max - self.min) / self.q))
        return [_quantised_type(self.min + i * self.q, self.q) for i in range(steps)]

    def sample(self, rng: random.Random) -> Any:
        d = self.distribution
        if d == "constant":
            return self.value
        if d == "categorical":
            weights = list(self.probabilities) if self.probabilities else None
            return rng.choices(self.values, weights=weights)[0]
        if d == "int_uniform":
            return rng.randint(int(self.min), int(self.max))
        if d == "uniform":
            return rng.uniform(self.min, self.max)
        if d == "q_uniform":
            return _quantise(rng.uniform(self.min, self.max), self.q)
        if d in ("log_uniform", "q_log_uniform"):  # bounds are natural logs
            value = math.exp(rng.uniform(self.min, self.max))
            return _quantise(value, self.q) if d.startswith("q_") else value
        if d in ("log_uniform_values", "q_log_uniform_values"):
            value = math.exp(rng.uniform(math.log(self.min), math.log(self.max)))
            return _quantise(value, self.q) if d.startswith("q_") else value
        if d == "inv_log_uniform":
            return math.exp(-rng.uniform(self.min, self.max))
        if d == "inv_log_uniform_values":
            return math.exp(-rng.uniform(-math.log(self.max), -math.log(self.min)))
        if d in ("normal", "q_normal"):
            value = rng.gauss(self.mu, self.sigma)
            return _quantise(value, self.q) if d.startswith("q_") else value
        if d in ("log_normal", "q_log_normal"):
            value = rng.lognormvariate(self.mu, self.sigma)
            return _quantise(value, self.q) if d.startswith("q_") else value
        if d in ("beta", "q_beta"):
            value = rng.betavariate(self.a, self.b)
            return _quantise(value, self.q) if d.startswith("q_") else value
        raise AssertionError(f"unhandled distribution {d}")  # load_sweep admits only DISTRIBUTIONS


def _quantised_type(value: float, q: float) -> float | int:
    return int(round(value)) if isinstance(q, int) else value


def _quantise(value: float, q: float) -> float | int:
    return _quantised_type(round(value / q) * q, q)


@dataclass(frozen=True)
class MetricSpec:
    name: str
    goal: Literal["minimize", "maximize"] = "minimize"  # W&B's default


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep file. `parameters` are the leaves in W&B's order (sorted by path)."""

    source: str
    method: Literal["grid", "random", "bayes"]
    parameters: tuple[ParamSpec, ...]
    metric: MetricSpec | None = None
    program: str | None = None
    command: tuple[str, ...] = DEFAULT_COMMAND
    name: str | None = None
    project: str | None = None
    entity: str | None = None
    run_cap: int | None = None
    early_terminate: dict[str, Any] | None = field(default=None, compare=False)  # server-side only

    @property
    def parameter_names(self) -> list[str]:
        return [p.name for p in self.parameters]

    def grid_size(self) -> int:
        return math.prod(len(p.grid_values()) for p in self.parameters)


def _error(source: str, key: str, message: str) -> ConfigError:
    return ConfigError(f"{source}: {key}: {message}")


def _number(source: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _error(source, key, f"expected a number, got {value!r}")
    return value


def _infer_distribution(config: dict[str, Any]) -> str | None:
    if "distribution" in config:
        return config["distribution"]
    if "value" in config:
        return "constant"
    if "values" in config:
        return "categorical"
    if "min" in config and "max" in config:
        ints = all(isinstance(config[k], int) and not isinstance(config[k], bool) for k in ("min", "max"))
        return "int_uniform" if ints else "uniform"
    return None


def _parse_param(source: str, path: tuple[str, ...], config: Any) -> list[ParamSpec]:
    key = "parameters." + ".".join(path)
    if not isinstance(config, dict):
        raise _error(source, key, f"expected a mapping like {{values: [...]}}, got {config!r}")
    if "parameters" in config:
        if set(config) != {"parameters"} or not isinstance(config["parameters"], dict) or not config["parameters"]:
            raise _error(source, key, "a nested group holds only a non-empty `parameters:` mapping")
        return [leaf for name in config["parameters"]
                for leaf in _parse_param(source, (*path, str(name)), config["parameters"][name])]
    unknown = sorted(set(config) - set(PARAM_KEYS))
    if unknown:
        raise _error(source, f"{key}.{unknown[0]}", f"unknown key (allowed: {', '.join(PARAM_KEYS)}, parameters)")
    dist = _infer_distribution(config)
    if dist not in DISTRIBUTIONS:
        hint = f"{dist!r} is not a W&B distribution" if dist else "says neither value, values, min/max nor distribution"
        raise _error(source, key, f"{hint} (allowed: {', '.join(DISTRIBUTIONS)})")
    kwargs: dict[str, Any] = {}
    if dist == "constant":
        if "value" not in config:
            raise _error(source, key, f"constant needs `value`, got {config!r}")
        kwargs["value"] = config["value"]
    elif dist == "categorical":
        values = config.get("values")
        if not isinstance(values, list) or not values:
            raise _error(source, f"{key}.values", f"expected a non-empty list, got {values!r}")
        kwargs["values"] = tuple(values)
        if "probabilities" in config:
            probs = config["probabilities"]
            if not isinstance(probs, list) or len(probs) != len(values):
                raise _error(source, f"{key}.probabilities",
                             f"expected {len(values)} numbers, one per value, got {probs!r}")
            probs = [_number(source, f"{key}.probabilities", p) for p in probs]
            if abs(sum(probs) - 1.0) > 1e-6 or min(probs) < 0:
                raise _error(source, f"{key}.probabilities", f"must be >= 0 and sum to 1, got {probs}")
            kwargs["probabilities"] = tuple(probs)
    if dist in BOUNDED:
        for bound in ("min", "max"):
            if bound not in config:
                raise _error(source, key, f"{dist} needs `min` and `max`")
            kwargs[bound] = _number(source, f"{key}.{bound}", config[bound])
        if kwargs["min"] >= kwargs["max"]:
            raise _error(source, key, f"min {kwargs['min']} is not less than max {kwargs['max']}")
        if dist == "int_uniform" and not all(float(kwargs[b]).is_integer() for b in ("min", "max")):
            raise _error(source, key, "int_uniform needs integer min and max")
        if dist in POSITIVE_BOUNDS and kwargs["min"] <= 0:
            raise _error(source, f"{key}.min", f"{dist} needs min > 0 (these are the values, not their logs)")
    for extra in ("q", "mu", "sigma", "a", "b"):
        if extra in config:
            kwargs[extra] = _number(source, f"{key}.{extra}", config[extra])
    if kwargs.get("q", 1.0) <= 0:
        raise _error(source, f"{key}.q", f"must be > 0, got {kwargs['q']!r}")
    return [ParamSpec(path=path, distribution=dist, **kwargs)]


def parse_sweep(data: Any, source: str) -> SweepSpec:
    """Validate a sweep mapping (as loaded from YAML); errors name the file, the key and what is allowed."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    unknown = sorted(set(data) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise _error(source, unknown[0], f"unknown key (allowed: {', '.join(TOP_LEVEL_KEYS)})")
    method = data.get("method")
    if method not in METHODS:
        raise _error(source, "method", f"{method!r} is not allowed (allowed: {', '.join(METHODS)})")
    params_cfg = data.get("parameters")
    if not isinstance(params_cfg, dict) or not params_cfg:
        raise _error(source, "parameters", "expected a non-empty mapping of parameter name -> spec")
    leaves = [leaf for name, cfg in params_cfg.items() for leaf in _parse_param(source, (str(name),), cfg)]
    leaves.sort(key=lambda p: p.path)
    metric = None
    if "metric" in data:
        m = data["metric"]
        if not isinstance(m, dict) or not isinstance(m.get("name"), str):
            raise _error(source, "metric", "expected {name: ..., goal: maximize|minimize}")
        bad = sorted(set(m) - set(METRIC_KEYS))
        if bad:
            raise _error(source, f"metric.{bad[0]}", f"unknown key (allowed: {', '.join(METRIC_KEYS)})")
        goal = m.get("goal", "minimize")
        if goal not in ("minimize", "maximize"):
            raise _error(source, "metric.goal", f"{goal!r} is not allowed (allowed: minimize, maximize)")
        metric = MetricSpec(name=m["name"], goal=goal)
    if method == "bayes" and metric is None:
        raise _error(source, "metric", "bayes search needs a metric to optimise")
    if method == "grid":
        for p in leaves:
            if p.distribution not in GRID_DISTRIBUTIONS or p.probabilities:
                raise _error(source, f"parameters.{p.name}", f"{p.distribution} cannot be gridded "
                             f"(grid allows {', '.join(GRID_DISTRIBUTIONS)} without probabilities)")
    command = data.get("command", list(DEFAULT_COMMAND))
    if not isinstance(command, list) or not command:
        raise _error(source, "command", "expected a non-empty list of strings/macros")
    command = tuple(str(c) for c in command)
    program = data.get("program")
    if program is not None and not isinstance(program, str):
        raise _error(source, "program", f"expected a path string, got {program!r}")
    if program is None and "${program}" in command:
        raise _error(source, "program", "required: the command uses ${program}")
    run_cap = data.get("run_cap")
    if run_cap is not None and (isinstance(run_cap, bool) or not isinstance(run_cap, int) or run_cap < 1):
        raise _error(source, "run_cap", f"expected a positive integer, got {run_cap!r}")
    return SweepSpec(
        source=source,
        method=method,
        parameters=tuple(leaves),
        metric=metric,
        program=program,
        command=command,
        name=data.get("name"),
        project=data.get("project"),
        entity=data.get("entity"),
        run_cap=run_cap,
        early_terminate=data.get("early_terminate"),
    )


def load_sweep(path: str | Path) -> SweepSpec:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: sweep file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return parse_sweep(data, str(path))


def _nest(flat: dict[tuple[str, ...], Any]) -> dict[str, Any]:
    """Leaf paths back to the agent's shape: a nested group becomes one dict-valued parameter."""
    point: dict[str, Any] = {}
    for path, value in flat.items():
        node = point
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return point


def iterate_points(spec: SweepSpec, count: int | None = None, seed: int = 0) -> Iterator[dict[str, Any]]:
    """The sweep's points in the order a W&B controller would propose them (grid) or seeded draws (random).

    `count` caps the number of points (and `run_cap` in the file caps it too); random search needs a cap.
    """
    caps = [c for c in (count, spec.run_cap) if c is not None]
    cap = min(caps) if caps else None
    if spec.method == "bayes":
        raise ConfigError(f"{spec.source}: method: bayes needs the W&B server's optimiser; "
                          "run it with `wandb sweep` + `wandb agent`, or set method: random to search locally")
    if spec.method == "grid":
        grid = itertools.product(*(p.grid_values() for p in spec.parameters))
        for values in itertools.islice(grid, cap):
            yield _nest({p.path: v for p, v in zip(spec.parameters, values)})
        return
    if cap is None:
        raise ConfigError(f"{spec.source}: random search runs until stopped; give --count N (or run_cap in the file)")
    rng = random.Random(seed)
    for _ in range(cap):
        yield _nest({p.path: p.sample(rng) for p in spec.parameters})
