"""Code fingerprints: each rule reruns exactly when a module its command imports changes.

The unit tests walk a small package made here; the workflow tests edit modules of the real
package in copies of one finished checkout (tiny grid) and read Snakemake's dry runs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from code_fingerprint import code_files, code_fingerprint

from orthskip.stages.tables import TABLES
from tests.workflow import REPO, copy_checkout, job_counts, tiny_config, write_config

RULES_DIR = REPO / "workflow" / "rules"


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def toy_package(root: Path) -> Path:
    """Every import form the walker must follow, and modules nobody imports."""
    return _write(root, {
        "orthskip/__init__.py": "",
        "orthskip/__main__.py": "from orthskip.cli import main\n",
        "orthskip/errors.py": "",
        "orthskip/cli.py": (
            "import json\nfrom orthskip.errors import E\n"
            "def _helper():\n    from orthskip import helped\n"
            "def cmd_stage_a(args):\n    from orthskip.stages.a import run\n    _helper()\n"
            "def cmd_stage_b(args):\n    import orthskip.lonely\n"
            "def main():\n    pass\n"
        ),
        "orthskip/helped.py": "",
        "orthskip/lonely.py": "",
        "orthskip/stages/__init__.py": "",
        "orthskip/stages/a.py": (
            "import numpy\nfrom . import rel\nfrom .. import up\n"
            "def f():\n    from orthskip.sub.deep import g\n"
            "def h(x):\n    import importlib\n"
            "    return importlib.import_module(f'orthskip.plugins.{x}')\n"
        ),
        "orthskip/stages/rel.py": "from .sibling import s\n",
        "orthskip/stages/sibling.py": "",
        "orthskip/up.py": "",
        "orthskip/sub/__init__.py": "",
        "orthskip/sub/deep.py": "",
        "orthskip/plugins/__init__.py": "",
        "orthskip/plugins/p1.py": "",
        "orthskip/plugins/p2.py": "",
    })  # fmt: skip


def _rel(root: Path, paths: list[Path]) -> set[str]:
    return {p.relative_to(root / "orthskip").as_posix() for p in paths}


def test_walker_follows_every_import_form(tmp_path):
    root = toy_package(tmp_path)
    got = _rel(root, code_files("stage-a", root))
    assert got == {
        "__init__.py", "__main__.py", "errors.py", "helped.py",  # cli top level, helper
        "stages/__init__.py", "stages/a.py", "stages/rel.py", "stages/sibling.py",
        "up.py", "sub/__init__.py", "sub/deep.py",  # relative, in a function, parent pkg
        "plugins/__init__.py", "plugins/p1.py", "plugins/p2.py",  # import_module prefix
    }  # fmt: skip
    assert "lonely.py" not in got and "cli.py" not in got  # other commands' imports
    assert _rel(root, code_files("stage-b", root)) == {
        "__init__.py", "__main__.py", "errors.py", "lonely.py",
    }  # fmt: skip


def test_fingerprint_changes_with_closure_and_own_cli_function_only(tmp_path):
    root = toy_package(tmp_path)
    before = {c: code_fingerprint(c, root) for c in ("stage-a", "stage-b")}
    (root / "orthskip/stages/sibling.py").write_text("X = 1\n")
    assert code_fingerprint("stage-a", root) != before["stage-a"]
    assert code_fingerprint("stage-b", root) == before["stage-b"]
    cli = root / "orthskip/cli.py"
    cli.write_text(cli.read_text().replace("def main():\n    pass", "def main():\n    return 1"))
    assert code_fingerprint("stage-b", root) == before["stage-b"]  # main is no one's entry
    cli.write_text(cli.read_text().replace("lonely\n", "lonely\n    return 0\n"))
    assert code_fingerprint("stage-b", root) != before["stage-b"]


def test_unknown_command_names_the_commands(tmp_path):
    root = toy_package(tmp_path)
    with pytest.raises(ValueError, match=r"cmd_nope\(\).*commands: stage-a, stage-b"):
        code_fingerprint("nope", root)


def rule_commands() -> dict[str, str]:
    """Rule -> the orthskip command its fingerprint names, checked against its shell line."""
    found: dict[str, str] = {}
    for smk in sorted(RULES_DIR.glob("*.smk")):
        rule = fingerprinted = None
        for line in smk.read_text().splitlines():
            named = re.match(r"\s*rule (\w+):", line)
            if m := named or re.search(r'pack_rule_name\("(\w+)"', line):
                rule = m.group(1)
            if m := re.search(r'code=code_fingerprint\("([\w-]+)"\)', line):
                fingerprinted = m.group(1)
            if (m := re.search(r"python -m orthskip ([\w-]+)", line)) and rule:
                assert fingerprinted == m.group(1), f"{smk.name}: rule {rule} runs {m.group(1)}"
                found[rule] = fingerprinted
                fingerprinted = None
    return found


RULES = rule_commands()


def test_every_rule_with_a_command_has_its_fingerprint():
    assert RULES == {
        "prepare_dataset": "prepare", "train": "train-pack", "extract_metrics": "metrics-pack",
        "aggregate": "aggregate", "dvc_summary": "dvc-summary", "figure": "figure",
        "figure_setting": "figure", "table": "table", "findings": "findings",
        "approx_cell": "approx-cell", "aggregate_approx": "approx-aggregate",
        "paper_numbers": "paper-numbers", "paper": "paper",
    }  # fmt: skip


def test_table_code_includes_the_results_reader_and_style():
    files = _rel(REPO, code_files("table"))
    assert {"stages/tables.py", "results.py", "figures/style.py", "analysis/stats.py"} <= files
    assert not {"stages/train.py", "training/reference.py"} & files


# ---- the real workflow ---------------------------------------------------------------------

CLOSURES = {
    rule: {p.relative_to(REPO).as_posix() for p in code_files(cmd)} for rule, cmd in RULES.items()
}


def _smk(checkout: Path, *args: str, cores: int = 1) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    cmd = [sys.executable, "-m", "snakemake", "--cores", str(cores), *args]
    cmd += ["--configfile", "config.yaml"]  # last: it takes several values
    proc = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One finished checkout on the tiny grid, its rule graph and each rule's outputs."""
    base = copy_checkout(tmp_path_factory.mktemp("fingerprint") / "checkout")
    grid = [{"arch": "mlp", "datasets": ["circles"], "variants": ["identity", "orth_learned"],
             "depths": [1], "seeds": [0]}]  # fmt: skip
    write_config(base, tiny_config(grid=grid))  # two cells: every rule runs, quickly
    _smk(base, cores=2)
    graph = _smk(base, "--rulegraph").stdout
    names = dict(re.findall(r'(\d+)\[label = "(\w+)"', graph))
    parents: dict[str, set[str]] = {name: set() for name in names.values()}
    for a, b in re.findall(r"(\d+) -> (\d+)", graph):
        parents[names[b]].add(names[a])
    outputs: dict[str, list[str]] = {}
    logs: dict[str, set[str]] = {}  # one log per job
    for line in _smk(base, "--summary").stdout.splitlines()[1:]:
        path, _, rule, log, *_ = line.split("\t")
        outputs.setdefault(rule, []).append(path)
        logs.setdefault(rule, set()).add(log)
    assert "Nothing to be done" in _smk(base, "-n").stdout
    jobs = {rule: len(v) for rule, v in logs.items()}
    return {"base": base, "parents": parents, "outputs": outputs, "jobs": jobs, "plans": {}}


def upstream(parents: dict[str, set[str]], rule: str) -> set[str]:
    seen, todo = set(), [rule]
    while todo:
        for p in parents[todo.pop()] - seen:
            seen.add(p)
            todo.append(p)
    return seen


def edited_copy(finished: dict, module: str, name: str) -> Path:
    """A copy of the finished checkout (mtimes kept) with ``module`` edited."""
    case = finished["base"].parent / name
    shutil.rmtree(case, ignore_errors=True)
    shutil.copytree(finished["base"], case, symlinks=True)
    with (case / module).open("a") as f:
        f.write("\n# edited by test_fingerprint\n")
    return case


def full_plan(finished: dict, module: str) -> dict[str, int]:
    """Jobs per rule that ``snakemake -n`` plans after editing ``module`` (one run each)."""
    if module not in finished["plans"]:
        case = edited_copy(finished, module, "full-" + module.replace("/", "_"))
        finished["plans"][module] = job_counts(_smk(case, "-n").stdout)
        shutil.rmtree(case)
    return finished["plans"][module]


def inside_module(rule: str) -> str:
    """A module of the rule's code that the fewest other rules import."""
    return min(sorted(CLOSURES[rule]), key=lambda m: sum(m in c for c in CLOSURES.values()))


def outside_module(finished: dict, rule: str) -> str | None:
    """A module outside the code of the rule and of every rule upstream of it; preferably
    one some other rule imports, so that the dry run still plans something."""
    near = {rule} | upstream(finished["parents"], rule)
    covered = set().union(*(CLOSURES[r] for r in near if r in CLOSURES))
    package = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "orthskip").rglob("*.py"))
    out = [m for m in package if m not in covered]
    used = [m for m in out if any(m in c for c in CLOSURES.values())]
    return (used or out or [None])[0]


@pytest.mark.slow
@pytest.mark.parametrize("rule", sorted(RULES))
def test_editing_a_module_it_imports_reruns_the_rule(finished, rule):
    module = inside_module(rule)
    # Only this rule may run: its jobs are planned by their own fingerprint, not because
    # an upstream rule reruns (train and extract_metrics import the same modules).
    case = edited_copy(finished, module, f"in-{rule}")
    proc = _smk(case, "-n", *finished["outputs"][rule], "--allowed-rules", rule)
    counts = job_counts(proc.stdout)
    assert set(counts) == {rule}, (module, counts)
    assert counts[rule] == finished["jobs"][rule]  # every job of the rule
    assert "Params have changed since last execution" in proc.stdout
    shutil.rmtree(case)
    assert full_plan(finished, module).get(rule, 0) >= 1


@pytest.mark.slow
@pytest.mark.parametrize("rule", sorted(RULES))
def test_editing_a_module_outside_its_code_plans_none_of_its_jobs(finished, rule):
    module = outside_module(finished, rule)
    if module is None:
        pytest.skip(f"every package module is in the code of {rule} or upstream of it")
    plan = full_plan(finished, module)
    assert rule not in plan, (module, plan)
    importers = {r for r, c in CLOSURES.items() if module in c}
    assert importers <= set(plan), (module, plan)  # the edit was seen where it counts


@pytest.mark.slow
def test_editing_the_figure_style_reruns_tables(finished):
    plan = full_plan(finished, "orthskip/figures/style.py")
    jobs = finished["jobs"]
    # figure_setting: the per-setting report figures (issue 30), drawn by the same code; the
    # paper's numbers read the tables' code, and the paper itself is built where TeX is
    paper = {"paper": 1} if jobs.get("paper") else {}
    assert plan == {"table": jobs["table"], "figure": jobs["figure"],
                    "figure_setting": jobs["figure_setting"], "findings": 1,
                    "paper_numbers": 1, **paper, "all": 1}  # fmt: skip
    assert jobs["table"] == len(TABLES)  # one job per table of the registry
