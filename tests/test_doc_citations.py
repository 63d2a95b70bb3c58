"""Citations of the specification pages name the page and point at a heading that exists.

The specification is three pages: docs/algorithms.md, docs/datasets.md and docs/toy_landscapes.md. Code, README.md
and the other pages cite them with the page name in front, e.g. ``docs/algorithms.md §9.6`` (a section),
``docs/algorithms.md D5`` (a decision), ``docs/datasets.md §1.2`` or just ``docs/toy_landscapes.md``. One page name
may carry a short list, as in ``docs/algorithms.md §8, §10.1``, ``docs/algorithms.md §1 D2`` or
``docs/algorithms.md §9.8 row 2, §10.2``. Inside a specification page a bare section number refers to that page
itself (and a bare decision to docs/algorithms.md when it is that page). Everything else is a legacy form and fails:
a bare section sign or decision in code, "spec" or "decision" instead of the page, a page name without ``docs/``, or
a page name set off by backticks from its section. Each failure names the file and line.

Plain text scanning only: no project import, so the test takes well under a second.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SPEC_PAGES = ("algorithms", "datasets", "toy_landscapes")
CODE_DIRS = ("agents", "envs", "eval", "fidec_gym", "tests")

SIGN = "\u00a7"  # the section sign, spelt as an escape so that this file holds no bare one
DEC = "D"  # likewise for decision names in the samples below
SECTION = SIGN + r"\d+(?:\.\d+)*"
DECISION = r"\bD\d+\b"
TOKEN = re.compile(rf"{SECTION}|{DECISION}")
SEPARATOR = r"(?:\s*,\s*|\s+and\s+|\s+or\s+|\s+)"
ROW = r"(?:\s+rows?\s+\d+(?:\s*[-\u2013]\s*\d+)?)?"  # a numbered table row of the section, as in "row 4"
CITATION = re.compile(rf"docs/(?P<page>[A-Za-z0-9_-]+)\.md(?P<refs>(?:{SEPARATOR}(?:{SECTION}{ROW}|{DECISION}))*)")
BARE_PAGE = re.compile(r"(?<![\w/.-])(?:" + "|".join(SPEC_PAGES) + r")\.md\b")
MARKDOWN_LINK_TARGET = re.compile(r"\]\([^)\s]*\)")
HEADING = re.compile(r"^#{2,6}\s+(?P<first>\S+)")
HEADING_ID = re.compile(r"^(?:\d+(?:\.\d+)*|D\d+)\.?$")


def scanned_files() -> list[Path]:
    files = [path for folder in CODE_DIRS for path in sorted((ROOT / folder).rglob("*.py"))]
    files.append(ROOT / "README.md")
    files += sorted(DOCS.glob("*.md"))
    files += sorted((ROOT / "leaderboards").rglob("*.md"))
    return [path for path in files if path.is_file()]


def page_of(path: Path) -> str | None:
    """The specification page a file is, if it is one (its bare references point at itself)."""
    if path.parent == DOCS and path.stem in SPEC_PAGES:
        return path.stem
    return None


@cache
def headings(page: str) -> tuple[tuple[int, str], ...]:
    """(line, first word) of every heading of level 2 or deeper in docs/<page>.md, code fences skipped."""
    found, fenced = [], False
    for number, line in enumerate((DOCS / f"{page}.md").read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        match = None if fenced else HEADING.match(line)
        if match:
            found.append((number, match["first"]))
    return tuple(found)


@cache
def anchors(page: str) -> frozenset[str]:
    """What a citation of docs/<page>.md may name: sign + number for sections, DN for decisions."""
    names = set()
    for _, first in headings(page):
        if HEADING_ID.match(first):
            name = first.rstrip(".")
            names.add(name if name.startswith("D") else SIGN + name)
    return frozenset(names)


def line_of(text: str, position: int) -> int:
    return text.count("\n", 0, position) + 1


def excerpt(text: str, position: int) -> str:
    start = text.rfind("\n", 0, position) + 1
    end = text.find("\n", position)
    return text[start : end if end >= 0 else len(text)].strip()[:150]


def check_file(path: Path, root: Path = ROOT) -> list[str]:
    """Every problem with the citations of one file, as 'file:line: problem: the line'."""
    text = path.read_text(encoding="utf-8")
    relative = path.relative_to(root).as_posix()
    own_page = page_of(path)
    is_markdown = path.suffix == ".md"
    problems: list[str] = []

    def report(position: int, problem: str) -> None:
        problems.append(f"{relative}:{line_of(text, position)}: {problem}: {excerpt(text, position)}")

    owned: set[int] = set()
    for citation in CITATION.finditer(text):
        page = citation["page"]
        if not (DOCS / f"{page}.md").is_file():
            report(citation.start(), f"docs/{page}.md does not exist")
            continue
        refs_start = citation.start("refs")
        for token in TOKEN.finditer(citation["refs"]):
            owned.add(refs_start + token.start())
            if token.group() not in anchors(page):
                report(refs_start + token.start(), f"docs/{page}.md has no heading {token.group()}")

    for token in TOKEN.finditer(text):
        if token.start() in owned:
            continue
        name = token.group()
        is_decision = name.startswith("D")
        if own_page is not None and (not is_decision or own_page == "algorithms"):
            # A bare reference inside a specification page points at the page itself.
            if name not in anchors(own_page):
                report(token.start(), f"docs/{own_page}.md has no heading {name} (bare reference on this page)")
        elif (
            is_decision
            and is_markdown
            and own_page is None
            and not re.search(r"(?:decision|spec)\s*$", text[max(0, token.start() - 12) : token.start()])
        ):
            continue  # prose outside the specification may use such names otherwise; only legacy phrasing fails
        else:
            what = "decision" if is_decision else "section"
            report(token.start(), f"{what} {name} without its page (write docs/algorithms.md {name} or similar)")

    for sign in re.finditer(SIGN, text):
        if not re.match(SECTION, text[sign.start() :]):
            report(sign.start(), "section sign without a section number")

    scrubbed = MARKDOWN_LINK_TARGET.sub(lambda m: " " * len(m.group()), text) if is_markdown else text
    for bare in BARE_PAGE.finditer(scrubbed):
        report(bare.start(), f"{bare.group()} without docs/ in front")
    return problems


def test_specification_pages_number_every_heading():
    problems = []
    for page in SPEC_PAGES:
        path = DOCS / f"{page}.md"
        assert path.is_file(), f"docs/{page}.md is missing"
        seen: dict[str, int] = {}
        for number, first in headings(page):
            if not HEADING_ID.match(first):
                problems.append(f"docs/{page}.md:{number}: heading does not start with its number or decision")
                continue
            name = first.rstrip(".")
            if name in seen:
                problems.append(f"docs/{page}.md:{number}: heading {name} repeats line {seen[name]}")
            seen[name] = number
    assert not problems, "\n".join(problems)


def test_algorithms_page_has_the_decisions_and_the_cited_subsections():
    names = anchors("algorithms")
    assert {DEC + str(n) for n in range(1, 6)} <= names
    top = {SIGN + str(n) for n in range(1, 15)}
    assert top <= names, sorted(top - names)


def test_every_citation_names_an_existing_page_and_heading():
    files = scanned_files()
    assert len(files) > 50, "the scan found too few files; is the repository layout unchanged?"
    problems = [problem for path in files for problem in check_file(path)]
    assert not problems, f"{len(problems)} citation problem(s):\n" + "\n".join(problems)


def test_checker_catches_legacy_forms(tmp_path):
    """The checker itself: normalised forms pass, each legacy form is reported with its line."""
    good = [
        f'"""FiDec (docs/algorithms.md {SIGN}9, {DEC}1)."""',
        f"# see docs/algorithms.md {SIGN}8, {SIGN}10.1 and docs/datasets.md {SIGN}1.2",
        f"# docs/algorithms.md {SIGN}1 {DEC}2; docs/algorithms.md {DEC}5; docs/toy_landscapes.md",
        f"# docs/algorithms.md {SIGN}9.8 row 2, {SIGN}10.2 (a row of the table, then another section)",
    ]
    bad = [
        f"# spec {SIGN}3.2",
        f"# decision {DEC}3",
        f"# {SPEC_PAGES[0]}.md {SIGN}3.3",
        f"# ``docs/toy_landscapes.md`` {SIGN}2",
        f"# docs/algorithms.md {SIGN}99.9",
        f"# docs/algorithms.md {DEC}9",
        f"# docs/{'missing'}.md {SIGN}1",
    ]
    path = tmp_path / "sample.py"
    path.write_text("\n".join(good + bad) + "\n", encoding="utf-8")
    problems = check_file(path, root=tmp_path)
    reported = sorted({int(problem.split(":")[1]) for problem in problems})
    assert reported == list(range(len(good) + 1, len(good) + len(bad) + 1)), "\n".join(problems)
