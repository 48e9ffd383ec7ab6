"""The README and docs/ say what the code does: every relative link (and its #anchor) leads
somewhere, every `make` target and `python -m` module they name exists, and the configuration
page is what the settings code generates, with every variable it reads."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from infra import settings_doc

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.DOTALL)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.MULTILINE)
MAKE = re.compile(r"(?:^|[\s;&|(])make\s+((?:-\S+\s+)*)([A-Za-z][\w.-]*)")
PYTHON_M = re.compile(r"(?:^|[\s;&|(/])python[\d.]*\s+(?:-[A-Za-z]\s*\S*\s+)*?-m\s+([\w.]+)")
PYTHON_SCRIPT = re.compile(r"(?:^|[\s;&|(/])python[\d.]*\s+([\w./-]+\.py)\b")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.MULTILINE)


def ids(paths: list[Path]) -> list[str]:
    return [str(path.relative_to(ROOT)) for path in paths]


def code(text: str) -> list[str]:
    """The code in a page: fenced blocks and inline spans."""
    return [m.group(0) for m in FENCE.finditer(text)] + [
        m.group(2) for m in INLINE_CODE.finditer(FENCE.sub("", text))
    ]


def prose(text: str) -> str:
    return INLINE_CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation gone, spaces to dashes."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"[`*_~]|<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for match in HEADING.finditer(FENCE.sub("", page.read_text(encoding="utf-8"))):
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def relative_links(text: str) -> list[str]:
    text = prose(text)
    targets = [m.group(1) for m in LINK.finditer(text)] + REFERENCE.findall(text)
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.IGNORECASE)]


def make_targets() -> set[str]:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets: set[str] = set()
    for line in makefile.splitlines():
        match = re.match(r"^([A-Za-z0-9_.%/ -]+?)\s*::?(?!=)", line)
        if match and not line.startswith("\t"):
            targets.update(match.group(1).split())
    return targets


@pytest.mark.parametrize("page", PAGES, ids=ids(PAGES))
def test_every_relative_link_leads_to_a_file_and_its_anchor(page: Path) -> None:
    broken = []
    for target in relative_links(page.read_text(encoding="utf-8")):
        path_part, _, anchor = target.partition("#")
        dest = page if not path_part else (page.parent / path_part).resolve()
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert broken == []


@pytest.mark.parametrize("page", PAGES, ids=ids(PAGES))
def test_every_make_target_named_exists(page: Path) -> None:
    targets = make_targets()
    named = {
        m.group(2) for block in code(page.read_text(encoding="utf-8")) for m in MAKE.finditer(block)
    }
    assert sorted(named - targets) == []


@pytest.mark.parametrize("page", PAGES, ids=ids(PAGES))
def test_every_python_module_and_script_named_exists(page: Path) -> None:
    blocks = code(page.read_text(encoding="utf-8"))
    modules = {m.group(1) for block in blocks for m in PYTHON_M.finditer(block)}
    missing = [module for module in sorted(modules) if not _module_exists(module)]
    scripts = {m.group(1) for block in blocks for m in PYTHON_SCRIPT.finditer(block)}
    missing += [script for script in sorted(scripts) if not (ROOT / script).is_file()]
    assert missing == []


def _module_exists(module: str) -> bool:
    """A module of this repository (a file or package under ROOT) or an installed one."""
    parts = module.split(".")
    local = ROOT.joinpath(*parts)
    if local.with_suffix(".py").is_file() or (local / "__main__.py").is_file():
        return True
    if (ROOT / parts[0]).is_dir():
        return False  # one of ours, and not there
    return importlib.util.find_spec(module) is not None


def test_the_checks_find_what_they_look_for() -> None:
    """The patterns above, on a page that breaks each rule once."""
    text = (
        "See [the API](http-api.md#errors), [a plot](../bench/x.png), [web](https://x.io).\n"
        "Run `HOST=0.0.0.0 make serve` or `make  bench-gpu`; make sure it works.\n"
        "```sh\n.venv/bin/python -X importtime -m bench.suite --runs 5\n"
        "python infra/scripts/build_tiny_model.py\n[not](a-link.md)\n```\n"
    )
    assert relative_links(text) == ["http-api.md#errors", "../bench/x.png"]
    blocks = code(text)
    assert {m.group(2) for b in blocks for m in MAKE.finditer(b)} == {"serve", "bench-gpu"}
    assert {m.group(1) for b in blocks for m in PYTHON_M.finditer(b)} == {"bench.suite"}
    assert {m.group(1) for b in blocks for m in PYTHON_SCRIPT.finditer(b)} == {
        "infra/scripts/build_tiny_model.py"
    }
    assert slug("The `/generate` route: errors, and Retry-After") == (
        "the-generate-route-errors-and-retry-after"
    )
    assert {"serve", "test", "bench"} <= make_targets()
    assert not _module_exists("bench.no_such_module")
    assert _module_exists("pytest")


def test_the_configuration_page_is_what_the_settings_code_generates() -> None:
    page = settings_doc.PAGE.read_text(encoding="utf-8")
    assert page == settings_doc.page(), (
        f"docs/configuration.md is stale: run `{settings_doc.COMMAND}`"
    )


def test_every_variable_the_settings_code_reads_is_on_the_configuration_page() -> None:
    page = settings_doc.PAGE.read_text(encoding="utf-8")
    sources = [*(ROOT / "runtime").rglob("*.py"), *(ROOT / "handler").rglob("*.py")]
    names = set().union(*(settings_doc.names_read_in(path) for path in sources))
    assert "MODEL" in names
    missing = sorted(name for name in names if f"`THAW_{name}`" not in page)
    assert missing == [], f"add these to their settings class, then run `{settings_doc.COMMAND}`"
