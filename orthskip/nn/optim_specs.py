"""The optimizer's options (``config["train"]["optimizer"]``) and constraints, torch-free.

The config checks (``orthskip.config.grid``) and the schema generator read them from here
without importing torch; ``orthskip.nn.optim.build_optimizer`` reads them too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orthskip.config.constraints import Constraint, DataShape, enforce
from orthskip.config.options import Option, check_options, defaults

OPTIMIZERS = ("sgd", "adamw")
# config["train"]["optimizer"]: type, default, allowed values (the schema's section is made
# from this table, so a library call without a config gets the pipeline's defaults).
OPTIM_SPECS: dict[str, Option] = {
    "name": Option("string", "sgd", "the Euclidean optimizer", choices=OPTIMIZERS),
    "lr": Option("number", 0.05, "learning rate (peak of the schedule)", exclusive_minimum=0),
    "momentum": Option("number", 0.9, "SGD momentum", minimum=0),
    "nesterov": Option("boolean", False, "Nesterov momentum (sgd with momentum > 0 only)"),
    "weight_decay": Option("number", 0.0001, "weight decay of the non-skip parameters", minimum=0),
    "skip_weight_decay": Option(
        "number",
        0.0,
        "weight decay on skip parameters; 0 keeps Q free of a pull toward I",
        minimum=0,
    ),
    "skip_lr": Option(
        "string",
        "same",
        "the skip parameters' step: same (lr), or per_block (lr / L, L = the net's skip "
        "modules: the product of the skips moves O(lr) per step at every depth, as a 1/m-scaled "
        "branch does under Adam)",
        choices=("same", "per_block"),
    ),
    "main_lr": Option(
        "string",
        "same",
        "the other parameters' step (branches, stem, head): same (lr), or times_blocks (lr x L, "
        "L = the net's skip modules: under SGD a 1/m-scaled branch's gradient is O(1/m), so "
        "with times_blocks each block moves O(lr/m) per step and the net O(lr), as under Adam; "
        "with skip_lr per_block, SGD's depth-aware step)",
        choices=("same", "times_blocks"),
    ),
    "betas": Option(
        "array",
        [0.9, 0.999],
        "AdamW's (beta1, beta2)",
        extra={"items": {"type": "number"}, "minItems": 2, "maxItems": 2},
    ),
}
OPTIM_OPTIONS: dict[str, Any] = defaults(OPTIM_SPECS)


def _nesterov(cfg: Mapping[str, Any], data: DataShape | None) -> str | None:
    if cfg["nesterov"] and (cfg["name"] != "sgd" or cfg["momentum"] <= 0):
        name, momentum = cfg["name"], cfg["momentum"]
        return f"true needs name: sgd and momentum > 0 (name {name}, momentum {momentum})"
    return None


# What build_optimizer needs of its options beyond the table (also checked by the config
# check, for train.optimizer and every variant's override, before any job).
OPTIM_CONSTRAINTS: tuple[Constraint, ...] = (
    Constraint("nesterov_sgd", "nesterov", "nesterov needs sgd with momentum > 0", _nesterov),
)


def optim_options(optim_cfg: dict | None, where: str = "train.optimizer") -> dict[str, Any]:
    """Defaults overridden by ``optim_cfg`` (= config['train']['optimizer']), validated."""
    check_options(OPTIM_SPECS, optim_cfg or {}, where)
    cfg = {**OPTIM_OPTIONS, **(optim_cfg or {})}
    enforce(OPTIM_CONSTRAINTS, cfg, None, where)
    return cfg
