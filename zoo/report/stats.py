"""Statistics the leaderboard needs: mean ± std over seeds, rank correlations, Pareto front, plateaus (the tests
between cells are `zoo.report.inference`'s)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import mean, stdev

from scipy import stats as sps


@dataclass(frozen=True)
class SeedStat:
    mean: float
    std: float | None  # None for a single seed: no spread is known
    n: int

    @classmethod
    def of(cls, values: list[float]) -> "SeedStat":
        if not values:
            raise ValueError("no values")
        return cls(mean(values), stdev(values) if len(values) > 1 else None, len(values))

    def format(self, scale: float = 100.0, digits: int = 1) -> str:
        text = f"{self.mean * scale:.{digits}f}"
        if self.std is not None:
            text += f" ± {self.std * scale:.{digits}f}"
        return f"{text} (n={self.n})"


@dataclass(frozen=True)
class RankAgreement:
    n: int
    spearman: float
    kendall: float


def rank_agreement(xs: list[float], ys: list[float]) -> RankAgreement | None:
    """Spearman's rho and Kendall's tau-b between two measures of the same items (ties averaged)."""
    if len(xs) != len(ys):
        raise ValueError("xs and ys differ in length")
    if len(xs) < 3:
        return None  # two points always agree or disagree perfectly: not informative
    rho = sps.spearmanr(xs, ys).statistic
    tau = sps.kendalltau(xs, ys).statistic
    return RankAgreement(len(xs), float(rho), float(tau))


def ranks(values: list[float]) -> list[float]:
    """1 = smallest; ties share their average rank."""
    return [float(r) for r in sps.rankdata(values)]


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated when lower x (latency) and higher y (accuracy) are better."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            (x2 <= x and y2 >= y) and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i
        )
        if not dominated and not (math.isnan(x) or math.isnan(y)):
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


PLATEAU_POINTS = 3.0  # a run is at its plateau when it gained at most this (top-1 points) over the last quarter


def last_quarter_gain(curve: list[float]) -> float | None:
    """Top-1 gained (in points) from the start of the last quarter of epochs to the end; None below 4 epochs."""
    if len(curve) < 4:
        return None
    start = len(curve) - max(1, len(curve) // 4) - 1
    return 100 * (curve[-1] - curve[start])


def at_plateau(curve: list[float], chance: float | None = None) -> bool | None:
    """Gained at most PLATEAU_POINTS over the last quarter; None below 4 epochs. A run that never got clear of
    chance (final top-1 under twice `chance`, 1/classes) is flat because it has not started learning: not a plateau."""
    gain = last_quarter_gain(curve)
    if gain is None:
        return None
    return gain <= PLATEAU_POINTS and not near_chance(curve, chance)


def near_chance(curve: list[float], chance: float | None) -> bool:
    return bool(curve) and chance is not None and curve[-1] < 2 * chance


def chance_of(num_classes: int | None) -> float | None:
    return 1 / num_classes if num_classes else None
