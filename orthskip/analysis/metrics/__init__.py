"""Per-layer metrics of residual networks: orthogonality, spectra, gradient flow, conditioning.

`extract_metrics(model, probe_x, probe_y)` returns the long table described in docs/metrics.md;
`orthskip.results` holds the pyarrow schema of the per-cell Parquet file.
"""

from orthskip.analysis.metrics.extract import FAMILIES, extract_metrics
from orthskip.analysis.metrics.gradflow import grad_norm_ratio
from orthskip.analysis.metrics.jacobian import jacobian_sv
from orthskip.analysis.metrics.orthogonality import dist_identity, dist_init, orth_defect
from orthskip.analysis.metrics.representation import repr_condition
from orthskip.analysis.metrics.spectra import (
    conv_operator_matrix,
    conv_operator_svals,
    sv_circular,
    sv_hosvd,
    sv_operator,
    sv_reshaped,
)

__all__ = [
    "FAMILIES",
    "conv_operator_matrix",
    "conv_operator_svals",
    "dist_identity",
    "dist_init",
    "extract_metrics",
    "grad_norm_ratio",
    "jacobian_sv",
    "orth_defect",
    "repr_condition",
    "sv_circular",
    "sv_hosvd",
    "sv_operator",
    "sv_reshaped",
]
