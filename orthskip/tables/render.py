"""A table as strings (:class:`Table`) and its renderings: a booktabs LaTeX tabular
(pandas' Styler), the same as a booktabs longtable that runs over pages, and a compact
Markdown pipe table (pandas' own ``to_markdown`` needs ``tabulate``, which is not a
dependency, and pads every cell)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd


@dataclass
class Table:
    """A table rendered to strings: ``body`` (the header is its columns), which cells are
    bold as (row, column) positions, a note printed under it, and one LaTeX column letter per
    column (default: ``l`` for every column)."""

    body: pd.DataFrame
    bold: set[tuple[int, int]] = field(default_factory=set)
    note: str = ""
    align: str = ""

    @classmethod
    def of_rows(
        cls,
        header: list[str],
        rows: list[list[str]],
        bold: set[tuple[int, int]] | None = None,
        note: str = "",
        align: str = "",
    ) -> Table:
        body = pd.DataFrame(rows, columns=header, dtype=object)
        return cls(body, bold or set(), note, align)

    @property
    def header(self) -> list[str]:
        return [str(c) for c in self.body.columns]

    @property
    def rows(self) -> list[list[str]]:
        return self.body.astype(str).to_numpy().tolist()


def no_data(title: str) -> Table:
    return Table.of_rows([title], [["no data for this table in this run"]])


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
# Symbols we produce ourselves, replaced after escaping.
_LATEX_SYMBOLS = {
    "±": r"$\pm$",
    "−": "$-$",
    "‖": r"$\|$",
    "≤": r"$\leq$",
    "Δ": r"$\Delta$",
    "₂": r"$_2$",
    "≥": r"$\geq$",
    "√": r"$\surd$",
    "·": r"$\cdot$",
    "₀": r"$_0$",
    "²": r"$^2$",
}
# Whole formulas the tables write in plain text, typeset as mathematics (before escaping).
_LATEX_PHRASES = {
    "‖Q − I‖_F/√n": r"$\|Q - I\|_F/\sqrt{n}$",
    "‖W − I‖_F/√n": r"$\|W - I\|_F/\sqrt{n}$",
    "C·m^(−a)": r"$C\,m^{-a}$",
    "C·log m / m": r"$C\log m/m$",
    "C / m": r"$C/m$",
}
# Comments are not typeset, but keep them ASCII so that any engine reads the file.
_ASCII = {"±": "+/-", "−": "-", "‖": "||", "≤": "<=", "Δ": "Delta", "₂": "_2", "≥": ">=",
          "√": "sqrt", "·": "*", "₀": "_0", "²": "^2"}  # fmt: skip


def _ascii(text: str) -> str:
    for sym, plain in _ASCII.items():
        text = text.replace(sym, plain)
    return text


def _escape(text: str) -> str:
    out = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)
    for sym, tex in _LATEX_SYMBOLS.items():
        out = out.replace(sym, tex)
    return out


def latex_escape(text: str) -> str:
    """``text`` for a LaTeX document: special characters escaped, the symbols of
    ``_LATEX_SYMBOLS`` and the formulas of ``_LATEX_PHRASES`` in math mode."""
    parts = [str(text)]
    for phrase, tex in _LATEX_PHRASES.items():
        parts = [q for p in parts for q in _split_keep(p, phrase, tex)]
    return "".join(p if isinstance(p, _Tex) else _escape(p) for p in parts)


class _Tex(str):
    """A piece of ``latex_escape``'s output that is LaTeX already."""


def _split_keep(part: str, phrase: str, tex: str) -> list[str]:
    if isinstance(part, _Tex) or phrase not in part:
        return [part]
    pieces = part.split(phrase)
    out: list[str] = [pieces[0]]
    for piece in pieces[1:]:
        out += [_Tex(tex), piece]
    return [p for p in out if p]


def render_latex(t: Table) -> str:
    """A booktabs tabular (pandas' Styler), cells escaped by :func:`latex_escape`, bold cells
    in \\textbf, the note as leading comments."""
    return _render(t, environment=None)


# The longtable's caption and label are the paper's: its \longtab{name}{caption}{label}
# defines these two macros before it inputs tables/<name>.long.tex.
LONGTABLE_CAPTION = r"\longtabcaption"
LONGTABLE_LABEL = r"\longtablabel"


def render_longtable(t: Table) -> str:
    """:func:`render_latex` as a booktabs longtable that runs over as many pages as it needs:
    the caption (:data:`LONGTABLE_CAPTION`) and label (:data:`LONGTABLE_LABEL`) on the first
    page, the header row repeated on every page, a "continued" line at each page break."""
    return _render(t, environment="longtable")


def _render(t: Table, environment: str | None) -> str:
    header = t.header
    styler = (
        pd.DataFrame(t.rows, columns=range(len(header)))
        .style.hide(axis="index")
        # relabel_index passes each label through str.format: braces doubled
        .relabel_index([_braces(latex_escape(h)) for h in header], axis="columns")
        .format(latex_escape)
    )
    if t.bold:
        styler = styler.apply(lambda d: _css(d, t.bold, "textbf:--rwrap;"), axis=None)
    long = {"caption": LONGTABLE_CAPTION, "label": LONGTABLE_LABEL} if environment else {}
    body = styler.to_latex(
        hrules=True,
        column_format=t.align or "l" * len(header),
        environment=environment,
        **long,
    )
    note = "".join(f"% {_ascii(line)}\n" for line in t.note.splitlines())
    return note + body


def _braces(label: str) -> str:
    return label.replace("{", "{{").replace("}", "}}")


def _css(frame: pd.DataFrame, cells: set[tuple[int, int]], props: str) -> pd.DataFrame:
    """Styler's per-cell properties: ``props`` at the (row, column) positions in ``cells``."""
    return pd.DataFrame(
        [[props if (r, k) in cells else "" for k in range(frame.shape[1])]
         for r in range(frame.shape[0])],
        index=frame.index, columns=frame.columns,
    )  # fmt: skip


def _md_cell(text: str) -> str:
    return str(text).replace("|", r"\|")


def render_markdown(t: Table) -> str:
    """A pipe table, one line per row, cells as written (findings.md and the tests read it
    line by line), bold cells in **; the note after a blank line."""
    header = t.header
    align = t.align or "l" * len(header)
    rule = ["---:" if a == "r" else (":---:" if a == "c" else ":---") for a in align]
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |"]
    lines.append("| " + " | ".join(rule) + " |")
    for r, row in enumerate(t.rows):
        cells = [
            f"**{_md_cell(c)}**" if (r, k) in t.bold and c else _md_cell(c)
            for k, c in enumerate(row)
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if t.note:
        lines += ["", t.note]
    return "\n".join(lines) + "\n"
