"""The README is a quick start and a reference: short, the two commands, links that resolve."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_is_at_most_300_lines():
    assert len(README.splitlines()) <= 300


def test_quick_start_has_the_two_commands():
    quick = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", quick, re.S).group(1)
    commands = [ln.split("#")[0].strip() for ln in block.splitlines() if ln.strip()]
    assert commands == ["make run", "make test"]


def _prose(text: str) -> str:
    """``text`` without code blocks and inline code (where brackets are not links)."""
    return re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", text, flags=re.S))


def test_every_relative_link_resolves():
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", _prose(doc.read_text())):
            if "://" not in target:
                assert (doc.parent / target).exists(), f"{doc.name}: {target}"


def test_no_paragraph_appears_twice_across_readme_and_docs():
    """Text lives in one place: the README links the docs instead of repeating them."""
    seen: dict[str, str] = {}
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for para in re.split(r"\n\s*\n", doc.read_text()):
            key = " ".join(para.split())
            if len(key) < 120 or key.startswith(("```", "|")):
                continue
            assert key not in seen, f"{doc.name} repeats a paragraph of {seen[key]}: {key[:80]}"
            seen[key] = doc.name
