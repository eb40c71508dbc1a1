"""The family of comparisons a classification board tests, built once from its runs and shared by every table and
conclusion that states a difference (`zoo.report.inference` tests it).

The family is every comparison the board would print, whether or not a table shows it:
- `models`: every pair of models within a recipe × sampler group (the main boards' `≈` marks are its adjacent pairs);
- `recipe`: advanced − basic per model and sampler;
- `sampler`: multi-scale − fixed per model and recipe.
A cell enters only when it is comparable: two seeds or more, every seed at its plateau, and no EMA shorter than its
horizon (what is left out is listed as not testable, with why). Values are the cells' reported top-1 (EMA weights
where the recipe has EMA).
"""
from __future__ import annotations

from itertools import combinations

from zoo.report.inference import Family, Outcome, Outcomes
from zoo.report.stats import at_plateau, chance_of
from zoo.results import RunRecord

Groups = dict[tuple[str, str, str], list[RunRecord]]
AXES = {"recipe": ("basic", "advanced"), "sampler": ("fixed", "multiscale")}


def ema_short(records: list[RunRecord]) -> bool:
    """A cell (the seeds of one config) any of whose runs had an EMA shorter than its horizon."""
    return any(r.ema_short for r in records)


def top1s(records: list[RunRecord]) -> list[float]:
    return [r.top1 for r in records if r.top1 is not None]


def settled(records: list[RunRecord]) -> bool:
    """Every seed of the cell reached its plateau (curves too short to judge count as not settled)."""
    return bool(records) and all(
        at_plateau([row.val_top1 for row in r.history], chance_of(r.num_classes)) for r in records)


def why_not_comparable(records: list[RunRecord]) -> str | None:
    """None for a cell the family may test; else the reason, in the board's words."""
    if not top1s(records):
        return "no top-1"
    if ema_short(records):
        return "EMA shorter than its horizon"
    if len(top1s(records)) < 2:
        return "a single seed"
    if any(len(r.history) < 4 for r in records):
        return "too few epochs recorded to judge its plateau"
    if not settled(records):
        return "not trained to a plateau"
    return None


def pair_label(recipe: str, sampler: str, a: str, b: str) -> str:
    first, second = sorted((a, b))
    return f"{recipe}/{sampler}: {first} vs {second}"


def axis_label(axis: str, name: str, other: str) -> str:
    """`recipe` effect of `name` under sampler `other` (or the `sampler` effect under recipe `other`)."""
    return f"{axis}: {name} ({other})"


def board_family(groups: Groups, name: str = "classification board") -> Outcomes:
    family = Family(name)
    comparable = {key: top1s(recs) for key, recs in groups.items() if why_not_comparable(recs) is None}
    for key, values in comparable.items():
        family.add_cell(values)
    for key, recs in groups.items():
        if key not in comparable and top1s(recs):
            family.untested.append(f"{key[0]} ({key[1]}/{key[2]}): {why_not_comparable(recs)}")
    for recipe, sampler in sorted({(r, s) for _, r, s in groups}):
        names = sorted(m for (m, r, s) in comparable if (r, s) == (recipe, sampler))
        for a, b in combinations(names, 2):
            family.add("models", pair_label(recipe, sampler, a, b), a, comparable[(a, recipe, sampler)],
                       b, comparable[(b, recipe, sampler)])
    for axis, (first, second) in AXES.items():
        for model, recipe, sampler in sorted(comparable):
            if (recipe if axis == "recipe" else sampler) != first:
                continue
            other = (model, second, sampler) if axis == "recipe" else (model, recipe, second)
            if other in comparable:
                fixed_part = sampler if axis == "recipe" else recipe
                family.add(axis, axis_label(axis, model, fixed_part), first, comparable[(model, recipe, sampler)],
                           second, comparable[other])
    return family.outcomes()


def pair_outcome(outcomes: Outcomes | None, recipe: str, sampler: str, a: str, b: str) -> Outcome | None:
    """The family's test of a against b in one group, or None when the family did not test that pair."""
    if outcomes is None:
        return None
    return outcomes.of("models", pair_label(recipe, sampler, a, b))
