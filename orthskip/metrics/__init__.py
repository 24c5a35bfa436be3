"""Per-layer metrics of residual networks: orthogonality, spectra, gradient flow, conditioning.

`extract_metrics(model, probe_x, probe_y)` returns the long table described in docs/metrics.md;
`orthskip.metrics.schema` holds the pyarrow schema of the per-cell Parquet file.
"""

from orthskip.metrics.extract import FAMILIES, extract_metrics, select_probe
from orthskip.metrics.gradflow import grad_norm_ratio
from orthskip.metrics.jacobian import jacobian_sv
from orthskip.metrics.orthogonality import dist_identity, dist_init, orth_defect
from orthskip.metrics.representation import repr_condition
from orthskip.metrics.schema import (
    COLUMNS,
    METRIC_COLUMNS,
    SCHEMA,
    SchemaError,
    to_table,
    with_cell_columns,
    write_cell_metrics,
)
from orthskip.metrics.spectra import (
    conv_operator_matrix,
    conv_operator_svals,
    sv_circular,
    sv_hosvd,
    sv_operator,
    sv_reshaped,
)

__all__ = [
    "COLUMNS",
    "FAMILIES",
    "METRIC_COLUMNS",
    "SCHEMA",
    "SchemaError",
    "conv_operator_matrix",
    "conv_operator_svals",
    "dist_identity",
    "dist_init",
    "extract_metrics",
    "grad_norm_ratio",
    "jacobian_sv",
    "orth_defect",
    "repr_condition",
    "select_probe",
    "sv_circular",
    "sv_hosvd",
    "sv_operator",
    "sv_reshaped",
    "to_table",
    "with_cell_columns",
    "write_cell_metrics",
]
