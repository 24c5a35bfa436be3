"""The names the workflow plans with: every figure, table and paper input, and the function
that makes each, as ``"module.function"`` of :mod:`orthskip.figures` or
:mod:`orthskip.tables`.

Planning a run (workflow/rules/common.smk) reads this module alone, so that it loads
neither matplotlib nor the statistics behind the figures and tables; the stages resolve
the functions (``orthskip.stages.figures.FIGURES``, ``orthskip.stages.tables.TABLES``). A
new figure or table is one module there and one entry here.
"""

from __future__ import annotations

import shutil

#: The paper's figures, sized for print (column or page width): name -> function.
PAPER_FIGURE_SOURCES: dict[str, str] = {
    "paper_rate": "paper.rate",
    "paper_rate_by_epoch": "paper.rate_by_epoch",
    "paper_accuracy_depth": "paper.accuracy_depth",
    "paper_start_end": "paper.start_end",
    "paper_approximation": "paper.approximation",
    "paper_grad_ratio": "paper.grad_ratio",
    "paper_conditioning": "paper.conditioning",
}
#: Every figure: name -> function ``metrics_dir -> matplotlib Figure``.
FIGURE_SOURCES: dict[str, str] = {
    "accuracy_vs_depth": "accuracy.accuracy_vs_depth",
    "training_curves": "accuracy.training_curves",
    "dist_identity": "orthogonality.dist_identity",
    "dist_identity_epochs": "trajectories.dist_identity_epochs",
    "grad_norm_ratio": "blockwise.grad_norm_ratio",
    "weight_condition": "conditioning.weight_condition",
    "repr_condition": "conditioning.repr_condition",
    "jacobian_spread": "blockwise.jacobian_spread",
    "decision_regions": "decision.decision_regions",
    **PAPER_FIGURE_SOURCES,
}
# One panel (or row of panels) per variant or per setting: one file per setting. Each with
# the metric families it draws (None: history or warp grids, always there), so that the
# workflow skips a setting whose cells measure none of them (e.g. the rate recipe's).
SETTING_FAMILIES: dict[str, frozenset[str] | None] = {
    "training_curves": None,
    "decision_regions": None,
    "dist_identity": frozenset({"dist_identity"}),
    "dist_identity_epochs": frozenset({"dist_identity"}),
    "grad_norm_ratio": frozenset({"grad_norm_ratio"}),
    "weight_condition": frozenset({"sv_reshaped", "sv_operator"}),
    "repr_condition": frozenset({"repr_condition"}),
    "jacobian_spread": frozenset({"jacobian_sv"}),
}
PER_SETTING: frozenset[str] = frozenset(SETTING_FAMILIES)

#: Every table: name -> (the result files it reads, ``results/metrics/<name>.parquet``, in
#: the order its function takes their DataFrames; the function).
TABLE_SOURCES: dict[str, tuple[tuple[str, ...], str]] = {
    "accuracy": (("cells",), "accuracy.accuracy_table"),
    "paired_vs_identity": (("cells", "history"), "paired.paired_table"),
    "identity_rate": (("layers", "cells"), "identity_rate.identity_rate_table"),
    "rate_by_epoch": (("layers",), "rate_by_epoch.rate_by_epoch_table"),
    "skip_rotation": (("layers",), "skip_rotation.skip_rotation_table"),
    "start_end_distance": (("layers",), "start_end.start_end_distance_table"),
    "orthogonal_approximation": (("approx",), "approximation.orthogonal_approximation_table"),
}
# the tables the paper includes from results/tables (paired_vs_identity is replaced by the
# generated table of numbers.tex: Holm-corrected, in findings.md's formats)
PAPER_TABLES: tuple[str, ...] = (
    "identity_rate",
    "start_end_distance",
    "orthogonal_approximation",
    "accuracy",
)
TEX_PACKAGES = ("texlive-latex-recommended", "texlive-fonts-recommended", "latexmk")


def setting_draws(name: str, measured: list[frozenset[str] | None]) -> bool:
    """Whether per-setting figure ``name`` has anything to draw for a setting whose cells
    measure these metric families (None: every family)."""
    need = SETTING_FAMILIES[name]
    return need is None or any(m is None or need & m for m in measured)


def paper_figures() -> tuple[str, ...]:
    return tuple(PAPER_FIGURE_SOURCES)


def tex_engine() -> str | None:
    """Why the paper cannot be compiled here (None: latexmk and pdflatex are on PATH)."""
    missing = [t for t in ("latexmk", "pdflatex") if shutil.which(t) is None]
    if not missing:
        return None
    return (f"{' and '.join(missing)} not found on PATH; install TeX, e.g. on Debian/Ubuntu "
            f"`apt-get install --no-install-recommends {' '.join(TEX_PACKAGES)}` "
            "(or `make paper`)")  # fmt: skip
