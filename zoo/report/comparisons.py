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
    """Every comparison the board makes, tested together; one whose side is not comparable is counted as not
    testable (with why) so that the board can say how large its family is and how much of it it could test."""
    family = Family(name)
    cells = {key: top1s(recs) for key, recs in groups.items() if top1s(recs)}
    why = {key: why_not_comparable(groups[key]) for key in cells}
    for key in cells:
        if why[key] is None:
            family.add_cell(cells[key])

    def compare(kind: str, label: str, a: tuple[str, str, str], a_name: str, b: tuple[str, str, str],
                b_name: str) -> None:
        reasons = [f"{key[0]} ({key[1]}/{key[2]}): {why[key]}" for key in (a, b) if why[key] is not None]
        if reasons:
            family.untested.append(f"{label}: " + "; ".join(reasons))
        else:
            family.add(kind, label, a_name, cells[a], b_name, cells[b])

    for recipe, sampler in sorted({(r, s) for _, r, s in cells}):
        names = sorted(m for (m, r, s) in cells if (r, s) == (recipe, sampler))
        for a, b in combinations(names, 2):
            compare("models", pair_label(recipe, sampler, a, b), (a, recipe, sampler), a, (b, recipe, sampler), b)
    for axis, (first, second) in AXES.items():
        for model, recipe, sampler in sorted(cells):
            other = (model, second, sampler) if axis == "recipe" else (model, recipe, second)
            if (recipe if axis == "recipe" else sampler) == first and other in cells:
                compare(axis, axis_label(axis, model, sampler if axis == "recipe" else recipe),
                        (model, recipe, sampler), first, other, second)
    return family.outcomes()


def pair_outcome(outcomes: Outcomes | None, recipe: str, sampler: str, a: str, b: str) -> Outcome | None:
    """The family's test of a against b in one group, or None when the family did not test that pair."""
    if outcomes is None:
        return None
    return outcomes.of("models", pair_label(recipe, sampler, a, b))
