"""Statistics the leaderboard needs: mean ± std over seeds, noise overlap, rank correlations, Pareto front."""
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

    def overlaps(self, other: "SeedStat") -> bool:
        """True when the two differ by less than their spread (mean ± std intervals overlap) or spread is unknown."""
        if self.std is None or other.std is None:
            return True
        return abs(self.mean - other.mean) <= self.std + other.std

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
