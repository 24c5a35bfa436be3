"""The seed codebase's open experiment: identity nets whose skips are swapped for the
orthogonal W_i closest to each block, then fine-tuned."""

from __future__ import annotations

import numpy as np
import pandas as pd

from orthskip.analysis.stats import mean_ci
from orthskip.results import APPROX_PHASES
from orthskip.tables.formats import pm
from orthskip.tables.render import Table, no_data


def orthogonal_approximation_frame(approx: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, arch, depth, kind, correction, phase): mean and std (ddof=1) over seeds of
    the test ``score`` (accuracy in %, R² as it is), of the mean ‖W_i − I‖_F/√n
    (``dist_identity``) and of the mean lower bound on Lip(F′_i) (``branch_lipschitz``);
    ``n`` seeds with a finite score, ``n_total`` seeds, ``n_diverged`` seeds whose fine-tuning
    diverged (status ``diverged``) and ``n_source_diverged`` seeds whose trained cell had
    (``source_*``)."""
    keys = ["dataset", "arch", "depth", "kind", "correction", "phase"]
    vals = ["score", "dist_identity", "branch_lipschitz"]
    cols = [*keys, "score_name", *[f"{v}_{s}" for v in vals for s in ("mean", "std")], "n",
            "n_total", "n_diverged", "n_source_diverged"]  # fmt: skip
    if approx.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for key, g in approx.groupby(keys, sort=True):
        name = str(g["score_name"].iloc[0])
        scale = 100.0 if name == "acc" else 1.0
        out = []
        for v in vals:
            s = mean_ci(g[v].to_numpy(dtype=float) * (scale if v == "score" else 1.0))
            out += [s.mean, s.std]
        n = int(np.isfinite(g["score"].to_numpy(dtype=float)).sum())
        status = g["status"].astype(str)
        rows.append((*key, name, *out, n, len(g), int((status == "diverged").sum()),
                     int(status.str.startswith("source_").sum())))  # fmt: skip
    f = pd.DataFrame(rows, columns=cols)
    return f.assign(_p=f["phase"].map({p: k for k, p in enumerate(APPROX_PHASES)})).sort_values(
        [*keys[:5], "_p"]).drop(columns="_p").reset_index(drop=True)  # fmt: skip


NOTE = (
    "The seed codebase's open experiment: nets trained with identity skips, each "
    "non-transition block's skip replaced by the orthogonal W_i closest to the block on the "
    "metrics probe (orthogonal Procrustes, det +1), frozen (orth_fixed) or learnable "
    "(orth_learned); corr.: the branch gets a parallel linear layer initialised to I − W_i "
    "so that the swapped net computes the same function. Test score (accuracy in %, or R²) "
    "before the swap, right after it, and after fine-tuning with the cell's own recipe; "
    "‖W − I‖_F/√n and the lower bound on Lip(F′_i) (branch_lipschitz, max), each the mean "
    "over swapped blocks; mean ± std over seeds that did not diverge (k div.: k seeds "
    "whose fine-tuning, or the trained cell, diverged; diverged (k): all of them)."
)


def orthogonal_approximation_table(approx: pd.DataFrame) -> Table:
    f = orthogonal_approximation_frame(approx)
    if f.empty:
        return no_data("orthogonal approximation of identity nets")
    header = ["dataset", "arch", "depth", "kind", "corr.", "score", *APPROX_PHASES,
              "‖W − I‖ swapped", "‖W − I‖ fine-tuned", "Lip(F) ≥ before", "Lip(F) ≥ swapped",
              "Lip(F) ≥ fine-tuned", "seeds"]  # fmt: skip
    rows = []
    keys = ["dataset", "arch", "depth", "kind", "correction"]
    for key, g in f.groupby(keys, sort=True):
        g = g.set_index("phase")

        def at(phase: str, col: str, fmt: str = ".3f", g=g) -> str:
            if phase not in g.index:
                return "–"
            r = g.loc[phase]
            lost = int(r["n_diverged"]) + int(r["n_source_diverged"])
            if lost and int(r["n"]) == 0:
                return f"diverged ({lost})"
            text = pm(r[f"{col}_mean"], r[f"{col}_std"], fmt)
            return text + (f" ({lost} div.)" if lost and col == "score" else "")

        name = str(g["score_name"].iloc[0])
        fmt = ".2f" if name == "acc" else ".3f"
        rows.append([str(key[0]), str(key[1]), str(int(key[2])), str(key[3]),
                     "yes" if key[4] else "no", "acc (%)" if name == "acc" else "R²",
                     *[at(p, "score", fmt) for p in APPROX_PHASES],
                     at("swapped", "dist_identity"), at("finetuned", "dist_identity"),
                     at("before", "branch_lipschitz"), at("swapped", "branch_lipschitz"),
                     at("finetuned", "branch_lipschitz"),
                     str(int(g["n_total"].max()))])  # fmt: skip
    return Table.of_rows(header, rows, note=NOTE, align="llrlll" + "r" * 9)
