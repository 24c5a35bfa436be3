"""The paper stage: results/paper/numbers.tex from the aggregated Parquet files, and
results/paper/paper.pdf compiled by latexmk (pdflatex) from a copy of ``paper/`` with that
file, the paper figures and the tables beside it.

``write_numbers(metrics_dir, out)`` is what the paper_numbers rule calls and
``build_paper(...)`` the paper rule. The LaTeX source reads ``numbers.tex``,
``figures/<name>.pdf`` and ``tables/<name>.tex`` relative to itself; nothing is written
into ``paper/``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from orthskip import results
from orthskip.errors import OrthskipError
from orthskip.io import atomic_path, write_text
from orthskip.stages.catalog import PAPER_TABLES, paper_figures, tex_engine
from orthskip.tables.paper_numbers import paper_numbers

MAIN = "paper.tex"
LATEXMK = ["latexmk", "-pdf", "-interaction=nonstopmode", "-halt-on-error", "-file-line-error"]
# pdfTeX stamps the compile time (CreationDate, ModDate) and a trailer /ID derived from it:
# without these primitives the same inputs give other bytes on every run, so a redraw of
# pulled results differs from the published paper. With SOURCE_DATE_EPOCH set, pdfTeX stamps
# that date instead (reproducible builds, as the figures do), so nothing is added then.
REPRODUCIBLE_PRETEX = r"-usepretex=\pdfinfoomitdate=1 \pdftrailerid{}"


class PaperError(OrthskipError):
    """The paper could not be compiled (no TeX engine, or a LaTeX error: the log's tail)."""


def write_numbers(metrics_dir: Path, out: Path) -> None:
    """results/paper/numbers.tex from ``metrics_dir/{layers,cells,approx,history}.parquet``."""
    names = ("layers", "cells", "approx", "history")
    frames = [results.read_table(Path(metrics_dir), n) for n in names]
    write_text(out, paper_numbers(*frames))


def _log_tail(build: Path, lines: int = 40) -> str:
    log = build / MAIN.replace(".tex", ".log")
    if not log.exists():
        return "(no LaTeX log)"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


# what TeX says when a page's content is taller than the page: the rest is printed below the
# bottom margin and lost (a longtable set while a figure waits, a box that no float can hold)
OFF_THE_PAGE = "has occurred while \\output is active"


def _text_off_the_page(build: Path) -> str:
    """The last run's overfull-page messages with the page that follows each (paper.log),
    or ""."""
    log = build / MAIN.replace(".tex", ".log")
    text = log.read_text(errors="replace") if log.exists() else ""
    found = []
    for part in text.split("Overfull \\vbox")[1:]:
        if OFF_THE_PAGE in part.split("\n", 1)[0]:
            page = re.search(r"\[(\d+)", part)
            where = f"page {page.group(1)}" if page else "a page"
            found.append(f"{where}: overfull by {part.split('pt', 1)[0].strip(' (')}pt")
    return "; ".join(found)


def build_paper(
    source: Path, numbers: Path, figures_dir: Path, tables_dir: Path, out: Path
) -> None:
    """Compile ``source/paper.tex`` in a scratch copy beside ``numbers``, the paper figures
    (``figures_dir/<name>.pdf``) and ``tables_dir/<name>.tex`` with its longtable
    ``<name>.long.tex``; write the PDF atomically."""
    why = tex_engine()
    if why:
        raise PaperError(why)
    source = Path(source)
    with tempfile.TemporaryDirectory(prefix="orthskip-paper-") as tmp:
        build = Path(tmp)
        shutil.copytree(source, build, dirs_exist_ok=True)
        shutil.copy2(numbers, build / "numbers.tex")
        for sub, names, ext, src in (("figures", paper_figures(), "pdf", figures_dir),
                                     ("tables", PAPER_TABLES, "tex", tables_dir),
                                     ("tables", PAPER_TABLES, "long.tex", tables_dir)):  # fmt: skip
            (build / sub).mkdir(exist_ok=True)
            for name in names:
                shutil.copy2(Path(src) / f"{name}.{ext}", build / sub / f"{name}.{ext}")
        pretex = [] if os.environ.get("SOURCE_DATE_EPOCH") else [REPRODUCIBLE_PRETEX]
        proc = subprocess.run([*LATEXMK, *pretex, MAIN], cwd=build, capture_output=True, text=True)
        print(proc.stdout[-20000:])
        if proc.returncode != 0 or not (build / "paper.pdf").exists():
            raise PaperError(f"latexmk failed ({proc.returncode}); the end of paper.log:\n"
                             f"{_log_tail(build)}")  # fmt: skip
        lost = _text_off_the_page(build)
        if lost:
            raise PaperError(f"the compiled paper sets text below a page's bottom margin, where "
                             f"it is lost: {lost}")  # fmt: skip
        with atomic_path(out) as dst:
            shutil.copyfile(build / "paper.pdf", dst)
