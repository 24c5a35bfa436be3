"""The ``orthskip`` command line: one subcommand per pipeline stage.

Snakemake rules call these with explicit paths; a person can run any cell by hand with
the same commands (docs/running.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from orthskip.errors import ConfigError, OrthskipError

# Each command imports its stage inside its function: a job loads only its own stage's
# libraries (``orthskip figure`` no torch), and workflow/lib/code_fingerprint.py counts a
# command's code from its function alone (this module's top-level imports count for every
# command).

if TYPE_CHECKING:
    from orthskip.config.grid import CellConfig


def _cell_config(args: argparse.Namespace) -> CellConfig:
    """The cell's config, from --cell-config (rules) or --configfile + --cell (by hand)."""
    from orthskip.config.grid import Cell, CellConfig, cell_config, cells, load_config

    if args.cell_config:
        return CellConfig.of(args.cell_config)
    if not (args.configfile and args.cell):
        raise OrthskipError("give --cell-config JSON, or --configfile FILE and --cell CELL")
    cfg = load_config(args.configfile)
    cell = Cell.parse(args.cell)
    if cell not in cells(cfg):
        raise OrthskipError(f"cell {args.cell} is not in the grid of {args.configfile}")
    return cell_config(cfg, cell)


def _pack_config(args: argparse.Namespace) -> list[CellConfig]:
    """The members' configs (--pack-config: a JSON list of cell configs, or ``-`` to read it
    from standard input, as the rules do: a pack of 150 members' configs is larger than one
    command-line argument may be, 128 KiB on Linux)."""
    from orthskip.config.grid import read_pack_config

    return read_pack_config(sys.stdin.read() if args.pack_config == "-" else args.pack_config)


def _add_cell_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cell-config", help="the cell's config as JSON (what the rules pass)")
    p.add_argument("--configfile", type=Path, help="pipeline config (with --cell)")
    p.add_argument("--cell", help="dataset/arch/skip/dDEPTH/sSEED (with --configfile)")
    p.add_argument("--data", type=Path, required=True, help="prepared dataset file")
    p.add_argument("--manifest", type=Path, required=True, help="its manifest")


def cmd_check(args: argparse.Namespace) -> int:
    from orthskip.config.grid import cells, load_config

    cfg = load_config(args.configfile)
    print(f"{args.configfile}: ok, {len(cells(cfg))} cells")
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    from orthskip.config.show import show

    sys.stdout.write(show(args.configfile, args.cell, args.origin))
    return 0


def cmd_config_schema(args: argparse.Namespace) -> int:
    from orthskip.config import schema as config_schema

    if args.write:
        changed = config_schema.write()
        print(f"{config_schema.SCHEMA}: {'regenerated' if changed else 'up to date'}")
        return 0
    if config_schema.SCHEMA.read_text() != config_schema.expected_text():
        print(
            f"{config_schema.SCHEMA} differs from the registries' option tables; "
            "regenerate it with: orthskip config schema --write",
            file=sys.stderr,
        )
        return 1
    print(f"{config_schema.SCHEMA}: up to date")
    return 0


def cmd_config_cells(args: argparse.Namespace) -> int:
    from orthskip.config.show import list_cells

    sys.stdout.write(list_cells(args.configfile))
    return 0


def cmd_dvc_check(args: argparse.Namespace) -> int:
    from orthskip.dvc_check import check

    print(check(args.mode, args.repo))
    return 0


def cmd_dvc_diagnose(args: argparse.Namespace) -> int:
    from orthskip.dvc_check import diagnose

    lines = diagnose(args.repo)
    for line in lines:
        print(line, file=sys.stderr)
    return 1 if lines else 0


def cmd_dvc_keep_records(args: argparse.Namespace) -> int:
    from orthskip.job_records import keep_records

    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        print("orthskip dvc keep-records: error: no command after --", file=sys.stderr)
        return 2
    return keep_records(cmd, args.metadata)


def cmd_prepare(args: argparse.Namespace) -> int:
    from orthskip.stages.prepare import prepare_dataset

    prepare_dataset(
        args.name,
        json.loads(args.spec),
        args.out,
        args.manifest,
        root=args.root,
        download=args.download,
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    # one cell is a pack of one: the engine the pipeline's packs train on
    from orthskip.stages.train import train_pack
    from orthskip.training.preempt import PREEMPT_EXIT_CODE, Preempted

    try:
        logs = [args.log_file] if args.log_file else None
        (status,) = train_pack([_cell_config(args)], args.data, args.manifest, [args.out], logs)
    except Preempted as err:
        logging.getLogger("orthskip").warning("%s", err)
        return PREEMPT_EXIT_CODE
    print(f"status: {status}")
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    from orthskip.stages.metrics import cell_metrics

    rows = cell_metrics(
        _cell_config(args), args.data, args.manifest, args.snapshots, args.out, args.warp_out
    )
    print(f"{rows} metric rows -> {args.out}")
    return 0


def cmd_train_pack(args: argparse.Namespace) -> int:
    from orthskip.stages.train import train_pack
    from orthskip.training.preempt import PREEMPT_EXIT_CODE, Preempted

    try:
        statuses = train_pack(
            _pack_config(args), args.data, args.manifest, args.outs, args.logs,
            vectorise=not args.sequential,
        )  # fmt: skip
    except Preempted as err:
        logging.getLogger("orthskip").warning("%s", err)
        return PREEMPT_EXIT_CODE
    print("statuses: " + " ".join(statuses))
    return 0


def cmd_metrics_pack(args: argparse.Namespace) -> int:
    from orthskip.stages.metrics import metrics_pack

    rows = metrics_pack(
        _pack_config(args), args.data, args.manifest, args.snapshots, args.outs,
        args.warp_outs, args.logs,
    )  # fmt: skip
    print(f"{rows} metric rows")
    return 0


def cmd_approx_cell(args: argparse.Namespace) -> int:
    from orthskip.stages.approx import approximate_cell

    cell_cfg = _cell_config(args)
    # unset options: the config's approx section and skip_options (by hand, --configfile),
    # else the schema's defaults (the rule passes every option)
    from orthskip.config.grid import approx_defaults, load_config

    by_hand = bool(args.configfile and not args.cell_config)
    cfg = load_config(args.configfile) if by_hand else {"skip_options": {}}
    section = cfg["approx"] if by_hand else approx_defaults()
    kinds = tuple(args.kinds or section["kinds"])
    epochs = args.epochs if args.epochs is not None else section["epochs"]
    correction = args.correction if args.correction is not None else section["correction"]
    skip_opts = json.loads(args.skip_options) if args.skip_options else cfg["skip_options"]
    log = logging.getLogger("orthskip")
    log.info("approx-cell %s: kinds %s, %d fine-tuning epochs, correction %s",
             cell_cfg.cell.path,
             " ".join(kinds), epochs, correction)  # fmt: skip
    approximate_cell(
        cell_cfg,
        args.data,
        args.manifest,
        args.snapshots,
        args.out,
        kinds=kinds,
        epochs=epochs,
        correction=correction,
        skip_options=skip_opts,
        status=args.status,
    )
    import pandas as pd

    rows = pd.read_parquet(args.out)
    for _, r in rows.iterrows():
        print(f"{r['kind']:>12} {r['phase']:>9} {r['status']:>15} "
              f"{r['score_name']} {r['score']:.4f}  ‖W − I‖ {r['dist_identity']:.4f}")  # fmt: skip
    return 0


def cmd_approx_aggregate(args: argparse.Namespace) -> int:
    from orthskip.stages.aggregate import aggregate_approx

    n = aggregate_approx(args.inputs, args.out)
    print(f"{n} approximation rows from {len(args.inputs)} cells -> {args.out}")
    return 0


def cmd_aggregate(args: argparse.Namespace) -> int:
    from orthskip.stages.aggregate import aggregate

    aggregate(args.status, args.history, args.metrics, args.warp, args.out_dir)
    return 0


def cmd_figure(args: argparse.Namespace) -> int:
    from orthskip.stages.figures import make_figure

    if (args.dataset is None) != (args.arch is None):
        raise ConfigError("figure: --dataset and --arch go together (one setting) or not at all")
    setting = None if args.dataset is None else (args.dataset, args.arch)
    make_figure(args.name, args.metrics_dir, args.pdf, args.png, setting)
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from orthskip.stages.tables import make_table

    make_table(args.name, args.metrics_dir, args.md, args.tex)
    return 0


def cmd_findings(args: argparse.Namespace) -> int:
    from orthskip.stages.tables import write_findings

    write_findings(args.metrics_dir, args.out)
    return 0


def cmd_paper_numbers(args: argparse.Namespace) -> int:
    from orthskip.stages.paper import write_numbers

    write_numbers(args.metrics_dir, args.out)
    return 0


def cmd_paper(args: argparse.Namespace) -> int:
    from orthskip.stages.paper import build_paper

    build_paper(args.source, args.numbers, args.figures_dir, args.tables_dir, args.out)
    return 0


def cmd_dvc_summary(args: argparse.Namespace) -> int:
    from orthskip.stages.dvc_summary import write_summary

    write_summary(args.cells, args.json, args.csv)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orthskip", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check", help="validate a config and count its cells")
    p.add_argument("configfile", type=Path)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser(
        "config", help="the effective config: `config show`, `config cells`, `config schema`"
    )
    config_sub = p.add_subparsers(dest="config_command", required=True)
    default_config = Path("config/config.yaml")  # what Snakemake reads without --configfile
    p = config_sub.add_parser(
        "show", help="the effective config (schema defaults filled) or one cell's, as YAML"
    )
    p.add_argument("--configfile", type=Path, default=default_config)
    p.add_argument("--cell", help="DATASET/ARCH/VARIANT/dDEPTH/sSEED: that cell's config")
    p.add_argument("--origin", action="store_true", help="annotate each value: file or default")
    p.set_defaults(func=cmd_config_show)
    p = config_sub.add_parser(
        "schema", help="check (or --write) the schema's sections generated from the registries"
    )
    p.add_argument("--write", action="store_true", help="regenerate the schema file")
    p.set_defaults(func=cmd_config_schema)
    p = config_sub.add_parser("cells", help="list the cells of the grid")
    p.add_argument("--configfile", type=Path, default=default_config)
    p.set_defaults(func=cmd_config_cells)

    p = sub.add_parser(
        "dvc", help="around publish/pull: `dvc check`, `dvc diagnose`, `dvc keep-records`"
    )
    dvc_sub = p.add_subparsers(dest="dvc_command", required=True)
    p = dvc_sub.add_parser("check", help="the default remote is set and readable")
    p.add_argument("mode", choices=("push", "pull"), help="pull: the remote must also hold results")
    p.add_argument("--repo", type=Path, default=Path("."), help="the DVC project")
    p.set_defaults(func=cmd_dvc_check)
    p = dvc_sub.add_parser(
        "diagnose", help="after a failed pull: files missing from or corrupt on the remote"
    )
    p.add_argument("--repo", type=Path, default=Path("."), help="the DVC project")
    p.set_defaults(func=cmd_dvc_diagnose)
    p = dvc_sub.add_parser(
        "keep-records",
        help="run a command (-- CMD ...); Snakemake job records it only re-timed keep their bytes",
    )
    p.add_argument("--metadata", type=Path, default=Path(".snakemake/metadata"))
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- the command and its arguments")
    p.set_defaults(func=cmd_dvc_keep_records)

    p = sub.add_parser("prepare", help="prepare one dataset and its manifest")
    p.add_argument("--name", required=True)
    p.add_argument("--spec", required=True, help="the dataset's config entry as JSON")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--root", type=Path, default=None, help="where raw files are (or go)")
    p.add_argument("--download", action="store_true", help="download raw files if missing")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("train", help="train one cell")
    _add_cell_args(p)
    p.add_argument("--out", type=Path, required=True, help="the cell's directory")
    p.add_argument(
        "--log-file",
        type=Path,
        default=None,
        help="append this run's log here (default: OUT/train.log; kept across runs)",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("metrics", help="per-layer metrics of one cell")
    _add_cell_args(p)
    p.add_argument("--snapshots", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--warp-out", type=Path, required=True)
    p.set_defaults(func=cmd_metrics)

    for name, func, help_text in (
        ("train-pack", cmd_train_pack, "train the members of a pack (vectorised by default)"),
        ("metrics-pack", cmd_metrics_pack, "per-layer metrics of every member of a pack"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument(
            "--pack-config",
            required=True,
            help="the member cell configs (orthskip.config.grid.pack_config_text's JSON, or a "
            "JSON list); - = stdin",
        )
        p.add_argument("--data", type=Path, required=True, help="prepared dataset file")
        p.add_argument("--manifest", type=Path, required=True, help="its manifest")
        p.add_argument("--logs", type=Path, nargs="+", help="one log per member (appended)")
        if func is cmd_train_pack:
            p.add_argument("--outs", type=Path, nargs="+", required=True, help="cell dirs")
            p.add_argument(
                "--sequential",
                action="store_true",
                help="train the members one after another (execution.vectorise: false)",
            )
        else:
            p.add_argument("--snapshots", type=Path, nargs="+", required=True)
            p.add_argument("--outs", type=Path, nargs="+", required=True)
            p.add_argument("--warp-outs", type=Path, nargs="+", required=True)
        p.set_defaults(func=func)

    p = sub.add_parser(
        "approx-cell", help="orthogonal approximation of one trained identity cell (Parquet)"
    )
    _add_cell_args(p)
    p.add_argument("--snapshots", type=Path, required=True, help="the cell's snapshots.pt")
    p.add_argument("--status", type=Path, required=True, help="its status.json (not ok: NaN rows)")
    p.add_argument("--out", type=Path, required=True, help="Parquet, one row per kind × phase")
    p.add_argument("--epochs", type=int, help="fine-tuning epochs (default: approx.epochs)")
    p.add_argument(
        "--kinds",
        nargs="+",
        choices=("orth_fixed", "orth_learned"),
        help="skips swapped in (default: approx.kinds)",
    )
    p.add_argument(
        "--correction",
        action=argparse.BooleanOptionalAction,
        help="branch correction layer I − W_i (default: approx.correction)",
    )
    p.add_argument(
        "--skip-options",
        help="JSON kind -> options of the new skips (default: the config's skip_options)",
    )
    p.set_defaults(func=cmd_approx_cell)

    p = sub.add_parser("approx-aggregate", help="results/metrics/approx.parquet from the cells'")
    p.add_argument("--inputs", type=Path, nargs="*", default=[], help="per-cell Parquet files")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_approx_aggregate)

    p = sub.add_parser("aggregate", help="merge all cells into results/metrics/*.parquet")
    for name in ("status", "history", "metrics", "warp"):
        p.add_argument(f"--{name}", type=Path, nargs="+", required=True)
    p.add_argument("--out-dir", type=Path, required=True)
    p.set_defaults(func=cmd_aggregate)

    p = sub.add_parser("figure", help="draw one figure from the aggregated Parquet")
    p.add_argument("name")
    p.add_argument("--metrics-dir", type=Path, required=True)
    p.add_argument("--pdf", type=Path, required=True)
    p.add_argument("--png", type=Path, required=True)
    p.add_argument("--dataset", help="draw only this setting's rows (with --arch)")
    p.add_argument("--arch", help="draw only this setting's rows (with --dataset)")
    p.set_defaults(func=cmd_figure)

    p = sub.add_parser("table", help="write one table from the aggregated Parquet")
    p.add_argument("name")
    p.add_argument("--metrics-dir", type=Path, required=True)
    p.add_argument("--md", type=Path, required=True)
    p.add_argument("--tex", type=Path, required=True)
    p.set_defaults(func=cmd_table)

    p = sub.add_parser("findings", help="results/tables/findings.md from the aggregated Parquet")
    p.add_argument("--metrics-dir", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_findings)

    p = sub.add_parser(
        "paper-numbers", help="results/paper/numbers.tex: the paper's numbers as LaTeX macros"
    )
    p.add_argument("--metrics-dir", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_paper_numbers)

    p = sub.add_parser("paper", help="compile results/paper/paper.pdf with latexmk")
    p.add_argument("--source", type=Path, required=True, help="the LaTeX source (paper/)")
    p.add_argument("--numbers", type=Path, required=True)
    p.add_argument("--figures-dir", type=Path, required=True)
    p.add_argument("--tables-dir", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_paper)

    p = sub.add_parser("dvc-summary", help="JSON/CSV summary for dvc metrics/plots")
    p.add_argument("--cells", type=Path, required=True)
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--csv", type=Path, required=True)
    p.set_defaults(func=cmd_dvc_summary)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args))
    except OrthskipError as err:
        print(f"orthskip {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
