"""The comparisons a board makes, tested as one family so that what it states survives the number of its tests.

A board compares many cells (models within a recipe × sampler group, a recipe's or a sampler's effect per model,
backbones per dense task), each from a handful of seeds. Three things keep its claims honest:

- **One seed-variance estimate for the whole board.** Two seeds give a cell's spread one degree of freedom, so a
  per-pair Welch test has almost no power. As limma does for a few replicates per gene (Smyth 2004, "Linear models
  and empirical Bayes methods for assessing differential expression"), every cell's seed variance is shrunk towards
  a prior fitted over all the board's cells (a scaled inverse-χ² with `df` degrees of freedom): the moderated t has
  the prior's degrees of freedom added to its own. Where the cells' spreads look alike the prior's `df` is large
  (pooling), where they differ it is small (each cell keeps its own spread).
- **Holm's step-down correction over the family** (every test the board runs, printed or not): the chance that a
  board of equal models states any difference stays at most 5 %, whatever the tests' dependence.
- **Effects with intervals.** Each comparison carries b − a with a 95 % interval (the moderated t interval; a
  stratified bootstrap over seeds where both sides have `BOOTSTRAP_SEEDS` or more), the probability that a seed of b
  beats a seed of a (Agarwal et al., NeurIPS 2021), and, where nothing is claimed, the smallest gap these seeds
  could have detected (80 % power at the family's first Holm threshold).

scipy has Benjamini–Hochberg (`false_discovery_control`) but no Holm or limma-style prior: those are written here,
a few lines each; the distributions, the bootstrap and the digamma/trigamma functions are scipy's.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from dataclasses import dataclass, field, replace
from statistics import mean, variance

import numpy as np
from scipy import special
from scipy import stats as sps

ALPHA = 0.05  # family-wise error rate of a board's claims
POWER = 0.8  # the power at which "the smallest detectable gap" is quoted
BOOTSTRAP_SEEDS = 5  # seeds a side from which the interval is a bootstrap over seeds instead of the t interval
CORRECTION = "Holm"


def _trigamma_inverse(y: float) -> float:
    """x with trigamma(x) = y (y > 0), by Newton's method from Smyth's starting point."""
    if y > 1e7:
        return 1 / math.sqrt(y)
    if y < 1e-6:
        return 1 / y
    x = 0.5 + 1 / y
    for _ in range(50):
        tri = float(special.polygamma(1, x))
        step = tri * (1 - tri / y) / float(special.polygamma(2, x))
        x += step
        if -step / x < 1e-8:
            break
    return x


@dataclass(frozen=True)
class VariancePrior:
    """The prior of every cell's seed variance: `var` with `df` degrees of freedom (inf: one pooled variance).
    `total_df` is what the board's seeds hold in all: no test borrows more (limma's cap), since the prior is
    itself estimated from them."""

    var: float
    df: float
    total_df: float

    @classmethod
    def fit(cls, cells: Sequence[Sequence[float]]) -> "VariancePrior | None":
        """Moment fit of log sample variances (limma's fitFDist) over the cells with two seeds or more; None with
        fewer than two such cells. A variance of exactly zero (seeds that agree to the last digit) is floored at a
        hundredth of the median, so that one such cell cannot pull the prior to zero."""
        spread = [(variance(c), len(c) - 1) for c in cells if len(c) >= 2]
        if len(spread) < 2:
            return None
        positive = [v for v, _ in spread if v > 0]
        total = float(sum(dof for _, dof in spread))
        if not positive:
            return cls(0.0, math.inf, total)
        floor = float(np.median(positive)) / 100
        d = np.array([dof for _, dof in spread], dtype=float)
        z = np.log([max(v, floor) for v, _ in spread])
        e = z - special.digamma(d / 2) + np.log(d / 2)
        e_mean = float(e.mean())
        e_var = float(((e - e_mean) ** 2).sum() / (len(e) - 1) - special.polygamma(1, d / 2).mean())
        if e_var <= 0:
            return cls(math.exp(e_mean), math.inf, total)
        df = 2 * _trigamma_inverse(e_var)
        return cls(math.exp(e_mean + special.digamma(df / 2) - math.log(df / 2)), df, total)

    def describe(self) -> str:
        sd = f"{100 * math.sqrt(self.var):.2f} pts"
        if math.isinf(self.df):
            return f"one pooled seed spread of {sd} (the cells' spreads are alike)"
        return f"each cell's spread shrunk towards {sd} with the weight of {self.df:.1f} extra degrees of freedom"


@dataclass(frozen=True)
class Test:
    """One comparison of b against a: `kind` is the family part ("models", "recipe", "sampler", ...)."""

    kind: str
    label: str
    a_name: str
    b_name: str
    a: tuple[float, ...]
    b: tuple[float, ...]


@dataclass(frozen=True)
class Outcome:
    test: Test
    delta: float  # mean(b) − mean(a)
    low: float
    high: float
    interval: str  # "t, 5 df" or "bootstrap"
    p: float
    p_holm: float
    detectable: float  # the smallest |gap| these seeds detect with POWER at the first Holm threshold
    p_improvement: float  # P(a seed of b beats a seed of a), ties count half

    @property
    def claimed(self) -> bool:
        return self.p_holm < ALPHA

    def towards(self, name: str) -> "Outcome":
        """The same outcome read as `name` − the other side (tests store their sides in a fixed order)."""
        if name == self.test.b_name:
            return self
        t = self.test
        return replace(self, test=Test(t.kind, t.label, t.b_name, t.a_name, t.b, t.a), delta=-self.delta,
                       low=-self.high, high=-self.low, p_improvement=1 - self.p_improvement)

    def effect(self, scale: float = 100.0) -> str:
        """`+2.1 pts [+0.8, +3.4]` (95 % interval)."""
        return f"{_signed(scale * self.delta)} pts [{_signed(scale * self.low)}, {_signed(scale * self.high)}]"

    def verdict(self, scale: float = 100.0) -> str:
        if self.claimed:
            return f"{self.effect(scale)}, Holm p{_p(self.p_holm)}"
        return (f"{self.effect(scale)}, not established (Holm p{_p(self.p_holm)}; these seeds detect "
                f"≥ {scale * self.detectable:.1f} pts)")


def _signed(value: float) -> str:
    return f"{value + 0.0 if abs(value) >= 0.05 else 0.0:+.1f}"  # never "-0.0"


def _p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"={p:.3f}"


@dataclass
class Family:
    """Every comparison of one board; `outcomes()` tests them together."""

    name: str
    tests: list[Test] = field(default_factory=list)
    untested: list[str] = field(default_factory=list)  # comparisons the board makes but cannot test (why)
    cells: list[tuple[float, ...]] = field(default_factory=list)  # every compared cell, once, for the prior

    def add(self, kind: str, label: str, a_name: str, a: Sequence[float], b_name: str, b: Sequence[float]) -> None:
        if min(len(a), len(b)) < 1:
            return
        self.tests.append(Test(kind, label, a_name, b_name, tuple(a), tuple(b)))

    def add_cell(self, values: Sequence[float]) -> None:
        self.cells.append(tuple(values))

    def outcomes(self) -> "Outcomes":
        prior = VariancePrior.fit(self.cells)
        raw = [_moderated(t, prior) for t in self.tests]
        p_holm = holm([p for p, *_ in raw])
        m = len(self.tests)
        results = [_outcome(t, r, ph, m) for t, r, ph in zip(self.tests, raw, p_holm)]
        return Outcomes(self, prior, results)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (monotone, capped at 1)."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    adjusted, running = [1.0] * len(pvalues), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def _moderated(test: Test, prior: VariancePrior | None) -> tuple[float, float, float]:
    """(p, standard error, degrees of freedom) of the moderated two-sample t for b − a."""
    na, nb = len(test.a), len(test.b)
    own_df = na + nb - 2
    own_ss = sum((x - mean(test.a)) ** 2 for x in test.a) + sum((x - mean(test.b)) ** 2 for x in test.b)
    if prior is None and own_df == 0:
        return 1.0, math.inf, 0.0  # one seed a side and no board to borrow a spread from: untestable
    if prior is None:
        var, df = own_ss / own_df, float(own_df)
    elif math.isinf(prior.df):
        var, df = prior.var, prior.total_df
    else:
        var = (prior.df * prior.var + own_ss) / (prior.df + own_df)
        df = min(prior.df + own_df, prior.total_df)
    se = math.sqrt(var * (1 / na + 1 / nb))
    delta = mean(test.b) - mean(test.a)
    if se == 0:
        return (0.0 if delta else 1.0), 0.0, df
    return float(2 * special.stdtr(df, -abs(delta) / se)), se, df  # t's two-sided tail, as sps.t.sf computes it


@lru_cache(maxsize=4096)
def _t_quantile(q: float, df: float) -> float:
    """sps.t.ppf, cached: a board asks the same three quantiles at one or two df for each of its hundreds of tests,
    and each frozen-distribution call costs about 0.1 ms (a quarter of a calibration test's time)."""
    return float(sps.t.ppf(q, df))


def _outcome(test: Test, raw: tuple[float, float, float], p_holm: float, family_size: int) -> Outcome:
    p, se, df = raw
    delta = mean(test.b) - mean(test.a)
    half = _t_quantile(0.975, df) * se if df > 0 else math.inf
    low, high, interval = delta - half, delta + half, ("normal" if math.isinf(df) else f"t, {df:.1f} df")
    if min(len(test.a), len(test.b)) >= BOOTSTRAP_SEEDS:
        low, high = _bootstrap(test.a, test.b)
        interval = "bootstrap"
    first = ALPHA / max(family_size, 1)  # Holm's first (strictest) threshold: what the smallest p must clear
    detectable = (_t_quantile(1 - first / 2, df) + _t_quantile(POWER, df)) * se if df > 0 else math.inf
    wins = sum((b > a) + 0.5 * (b == a) for a in test.a for b in test.b) / (len(test.a) * len(test.b))
    return Outcome(test, delta, low, high, interval, p, p_holm, detectable, wins)


def _bootstrap(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """95 % percentile interval of mean(b) − mean(a), resampling seeds within each side (stratified)."""
    result = sps.bootstrap((np.asarray(b), np.asarray(a)), lambda x, y, axis=-1: x.mean(axis) - y.mean(axis),
                           n_resamples=2000, method="percentile", random_state=np.random.default_rng(0))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


@dataclass(frozen=True)
class Outcomes:
    family: Family
    prior: VariancePrior | None
    results: list[Outcome]

    def of(self, kind: str, label: str) -> Outcome | None:
        return next((o for o in self.results if o.test.kind == kind and o.test.label == label), None)

    @property
    def claims(self) -> list[Outcome]:
        return [o for o in self.results if o.claimed]

    def seeds_for(self, gap: float) -> int | None:
        """Seeds per cell for a gap of `gap` (fraction) to be claimed with POWER at this family's size, from the
        board's seed spread (the prior's); None when the board measured no spread."""
        if self.prior is None or not self.results or self.prior.var <= 0:
            return None
        z = sps.norm.ppf(1 - ALPHA / len(self.results) / 2) + sps.norm.ppf(POWER)
        return max(2, math.ceil(2 * (z * math.sqrt(self.prior.var) / gap) ** 2))

    def summary(self) -> str:
        """The board's line on its family: size, correction, spread model, claims, resolution."""
        kinds: dict[str, int] = {}
        for o in self.results:
            kinds[o.test.kind] = kinds.get(o.test.kind, 0) + 1
        parts = ", ".join(f"{n} {kind}" for kind, n in kinds.items()) or "none"
        size = len(self.results) + len(self.family.untested)
        text = (f"**Family of comparisons ({self.family.name})**: {size} comparisons, {len(self.results)} tested "
                f"({parts})" + (f", {len(self.family.untested)} not testable (a side a single seed, not at its "
                                "plateau, or with a short EMA)" if self.family.untested else "")
                + f"; {CORRECTION}'s correction at a {100 * ALPHA:.0f} % family-wise error rate over the tested ones; "
                f"{len(self.claims)} claimed.")
        if self.prior is not None:
            text += f" Seed spread: {self.prior.describe()}."
        if self.results:
            gaps = sorted(o.detectable for o in self.results)
            text += (f" With these seeds the board resolves gaps of about {100 * gaps[len(gaps) // 2]:.1f} pts "
                     "(median over its comparisons, 80 % power)")
            need = self.seeds_for(0.01)
            text += f"; a 1-point gap would need {need} seeds per cell." if need else "."
        return text
