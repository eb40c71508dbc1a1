"""The generated tables of docs/ (the model list in docs/models.md, the backend list in docs/latency.md) are what
benchmarks/gen_docs_tables.py builds from the registries today: a model or backend added, removed or re-declared
without `make docs` fails here, so the committed lists cannot drift from the code."""
import importlib.util

import pytest

from zoo.config import REPO_ROOT

_spec = importlib.util.spec_from_file_location("gen_docs_tables", REPO_ROOT / "benchmarks" / "gen_docs_tables.py")
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)

BLOCKS = [(page, name) for page, blocks in gen.TARGETS.items() for name in blocks]


@pytest.mark.parametrize(("page", "name"), BLOCKS)
def test_committed_table_is_what_the_generator_produces(page, name):
    committed = gen.block((REPO_ROOT / page).read_text(), name)
    assert committed == gen.TARGETS[page][name](), f"{page}: the '{name}' table is stale: run `make docs`"


def test_the_lists_name_every_registered_model_and_backend():
    import zoo.models
    from zoo.measure.backends import backend_names

    models = gen.block((REPO_ROOT / "docs/models.md").read_text(), "models")
    backends = gen.block((REPO_ROOT / "docs/latency.md").read_text(), "backends")
    assert all(f"| `{name}` |" in models for name in zoo.models.list_models())
    assert all(f"| `{name}` |" in backends for name in backend_names())


def test_replace_block_rewrites_only_between_its_markers():
    text = "intro\n<!-- generated: t (cmd) -->\nold\nrows\n<!-- /generated -->\nafter\n"
    assert gen.replace_block(text, "t", "| new |") == "intro\n<!-- generated: t (cmd) -->\n| new |\n<!-- /generated -->\nafter\n"
    with pytest.raises(ValueError, match="found 0"):
        gen.replace_block(text, "other", "x")


def _anchors(path) -> set[str]:
    """GitHub's heading anchors of a markdown file: lower case, punctuation dropped, spaces to hyphens."""
    import re

    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL)
    headings = re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_link_of_readme_and_docs_resolves():
    """README and docs/ link each other by file and heading: a moved page or a renamed heading fails here."""
    import re

    pages = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            path = (page.parent / file).resolve() if file else page
            if not path.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_readme_links_every_docs_page_and_stays_a_front_page():
    readme = (REPO_ROOT / "README.md").read_text()
    assert readme.count("\n") < 250, "README.md is the front page: keep it under 250 lines (reference goes in docs/)"
    missing = [p.name for p in sorted((REPO_ROOT / "docs").glob("*.md")) if f"(docs/{p.name})" not in readme]
    assert not missing, f"README.md's 'Where to go next' must link every docs page: {missing}"
