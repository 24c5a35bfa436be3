"""Per-layer metrics of residual networks: orthogonality, spectra, gradient flow, conditioning.

`extract_metrics(model, probe_x, probe_y)` returns the long table described in docs/metrics.md;
`orthskip.results` holds the pyarrow schema of the per-cell Parquet file. Each metric family
is one `MetricFamily` in `FAMILIES` (`register_family` adds one).
"""

from orthskip.analysis.metrics.extract import (
    FAMILIES,
    MetricFamily,
    extract_metrics,
    register_family,
)
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
    "MetricFamily",
    "conv_operator_matrix",
    "conv_operator_svals",
    "dist_identity",
    "dist_init",
    "extract_metrics",
    "grad_norm_ratio",
    "jacobian_sv",
    "orth_defect",
    "register_family",
    "repr_condition",
    "sv_circular",
    "sv_hosvd",
    "sv_operator",
    "sv_reshaped",
]
