"""The generated tables of docs/: the model list (docs/models.md) and the backend list (docs/latency.md).

Each table sits between two marker comments in its page,

    <!-- generated: models (python benchmarks/gen_docs_tables.py) -->
    ...
    <!-- /generated -->

and is built from the registries alone: the models from `zoo.models` (`list_models`, `get_entry`, `published`,
`deploy_resolution`; params counted on a model built here with a 1000-class head), the backends from their
declarations (`zoo.measure.backends`: `backend_names`, `spec_of`, `display_order`). `make docs` rewrites them;
`--check` only compares (exit 1 when a page differs); tests/test_docs_tables.py fails when a committed table is not
what this script produces, so the lists cannot drift from the code.

Run: python benchmarks/gen_docs_tables.py [--check]
"""
from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
END = "<!-- /generated -->"


def _cell(value: object) -> str:
    return "–" if value is None or value == "" else str(value).replace("|", "\\|")


def _table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _params(create, name: str, num_classes: int, count) -> int:
    """Parameters of `name` built with `num_classes`: on the meta device where the factory allows it (no memory, no
    initialisation: the count is the same), else built for real (our own families compute buffers at build time)."""
    import torch

    try:
        with torch.device("meta"):
            return count(create(name, num_classes=num_classes))
    except (NotImplementedError, RuntimeError):
        return count(create(name, num_classes=num_classes))


def models_table() -> str:
    """Every registered model: family (and its file), params built here vs the paper's, GMACs, deployment
    resolution, the paper's top-1 and its source, fused for export or not, the paper's knob variants."""
    import torch

    import zoo.models as zm
    from zoo.measure.params import PAPER_NUM_CLASSES, count_params
    from zoo.models.registry import deploy_resolution

    torch.manual_seed(0)
    rows = []
    for name in zm.list_models():
        entry = zm.get_entry(name)
        paper = zm.published(name)
        family_file = REPO / "zoo" / "models" / f"{entry.family}.py"
        family = f"{entry.family} (`{family_file.relative_to(REPO)}`)" if family_file.is_file() else entry.family
        params = _params(zm.create, name, PAPER_NUM_CLASSES, count_params) / 1e6
        variants = ", ".join(f"`{label}`" for label in zm.published_variants(name))
        source = paper.source + (f" (arXiv {paper.arxiv})" if paper.arxiv and paper.arxiv not in paper.source else "")
        rows.append([f"`{name}`", family, f"{params:.3f}", paper.params_m, paper.gmacs, deploy_resolution(name),
                     paper.top1, "yes" if entry.hooks.reparameterize else "", variants, source, entry.description])
    header = ["model", "family (file)", "params M (built here, 1000 classes)", "paper params M", "paper GMACs",
              "deployed at px", "paper top-1 %", "fused for export", "paper's knob variants", "figures from",
              "what (its registration)"]
    return _table(header, rows)


def backends_table() -> str:
    """Every declared backend in table order, with what its declaration says."""
    from zoo.measure import backends as zb

    rows = []
    for name in zb.display_order(zb.backend_names()):
        spec = zb.spec_of(name)
        module = spec.make.__module__
        where = f"`{module.replace('.', '/')}.py`" if module.startswith("zoo.") else module
        threads = str(spec.threads) if spec.threads else "all"
        partner = f"`{spec.fp32_partner}`" if spec.fp32_partner else ""
        rows.append([f"`{name}`", spec.runtime, spec.dtype, threads, partner,
                     spec.export_kind, "yes" if spec.phone else "", " / ".join(map(str, spec.batch_sizes)),
                     "yes" if spec.matrix_default else "", "yes" if spec.architecture_board else "",
                     "yes" if spec.dense_rows else "", where])
    header = ["backend", "runtime", "dtype", "threads", "int8 compared with", "export (shared cache kind)",
              "phone runtime", "batch", "matrix default", "architecture board", "board's dense rows", "declared in"]
    return _table(header, rows)


# page -> {block name: what produces it}
TARGETS: dict[str, dict[str, Callable[[], str]]] = {
    "docs/models.md": {"models": models_table},
    "docs/latency.md": {"backends": backends_table},
}


def _block_pattern(name: str) -> re.Pattern[str]:
    return re.compile(r"(<!-- generated: " + re.escape(name) + r"\b[^>]*-->\n)(.*?)(" + re.escape(END) + ")",
                      re.DOTALL)


def replace_block(text: str, name: str, table: str) -> str:
    """`text` with the block called `name` holding `table`; ValueError when the page has no such block (once)."""
    pattern = _block_pattern(name)
    found = pattern.findall(text)
    if len(found) != 1:
        raise ValueError(f"expected one '<!-- generated: {name} ... -->' ... '{END}' block, found {len(found)}")
    return pattern.sub(lambda m: m.group(1) + table + "\n" + m.group(3), text)


def block(text: str, name: str) -> str:
    """The current contents of block `name` (without its trailing newline)."""
    found = _block_pattern(name).findall(text)
    if len(found) != 1:
        raise ValueError(f"expected one '<!-- generated: {name} ... -->' ... '{END}' block, found {len(found)}")
    return found[0][1].rstrip("\n")


def regenerate(check: bool = False) -> list[str]:
    """Rewrite every target page (or with `check`, only compare); returns the pages that differed."""
    stale = []
    for page, blocks in TARGETS.items():
        path = REPO / page
        text = path.read_text()
        new = text
        for name, make in blocks.items():
            new = replace_block(new, name, make())
        if new != text:
            stale.append(page)
            if not check:
                path.write_text(new)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/gen_docs_tables.py", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 when a page's table differs")
    args = parser.parse_args(argv)
    stale = regenerate(check=args.check)
    for page in stale:
        print(f"{page}: {'differs from the registries (run make docs)' if args.check else 'regenerated'}")
    if not stale:
        print("docs tables up to date")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
