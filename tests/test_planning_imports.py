"""What planning a run imports: workflow/rules/common.smk's imports, in a fresh process."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_planning_imports_neither_torch_nor_matplotlib_nor_scipy():
    """The figure and table names come from orthskip.stages.catalog, not from the stages
    that draw them, the option tables from the registries' spec modules and the file checks
    from orthskip.integrity, so that every Snakemake invocation loads none of the libraries
    the jobs use."""
    common = (REPO / "workflow" / "rules" / "common.smk").read_text()
    modules = re.findall(r"^from (orthskip[\w.]*) import", common, flags=re.M)
    modules += re.findall(r"^import (\w+)$", common, flags=re.M)
    assert "orthskip.config.grid" in modules and "cluster" in modules
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(REPO / 'workflow' / 'lib')!r})\n"
        f"for m in {modules!r}: __import__(m)\n"
        "heavy = ('torch', 'matplotlib', 'scipy', 'sklearn')\n"
        "print(json.dumps(sorted(m for m in heavy if m in sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout.splitlines()[-1]) == []


def test_the_config_and_the_registries_specs_import_no_torch():
    """The config checks read the option tables and constraints from the registries'
    torch-free modules, so loading and checking a config (orthskip.config.grid) and the
    figures' kind styles load no torch; the torch classes read their tables from there."""
    modules = [
        "orthskip.config.grid",
        "orthskip.nn.skip_kinds",
        "orthskip.nn.skip_specs",
        "orthskip.nn.arch_specs",
        "orthskip.nn.optim_specs",
    ]
    code = (
        "import json, sys\n"
        f"for m in {modules!r}: __import__(m)\n"
        "print(json.dumps('torch' in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout.splitlines()[-1]) is False
