"""dvc.yaml declares what each stage uses, so `dvc repro` re-runs a stage whenever its code or
inputs change and never reports "up to date" over a stale model or metrics."""

import ast
import re
from pathlib import Path

import pytest
import yaml
from conftest import REPO

SRC = REPO / "src"
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def module_file(name: str) -> Path | None:
    path = SRC.joinpath(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def imported_names(path: Path, module: str):
    """Every module name an import statement in the file may load, lazy imports in functions included."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def project_files(entry: str) -> set[Path]:
    """The project's source files that running the module `entry` can execute."""
    seen: set[Path] = set()
    todo = [entry]
    while todo:
        name = todo.pop()
        if name.split(".")[0] not in ("ferlab", "stages") or name in ("ferlab", "stages"):
            continue  # the top-level packages' __init__ hold no logic (a version string)
        parts = name.split(".")
        # a module also runs its packages' __init__ (the top-level ones hold no logic)
        for depth in range(2, len(parts) + 1):
            path = module_file(".".join(parts[:depth]))
            if path is not None and path not in seen:
                seen.add(path)
                todo.extend(imported_names(path, ".".join(parts[:depth])))
        path = module_file(name)
        if path is not None and path not in seen:
            seen.add(path)
            todo.extend(imported_names(path, name))
    return seen


def entry_module(stage: dict) -> str:
    """`python src/stages/train.py` -> "stages.train"."""
    script = re.fullmatch(r"python src/(stages/\w+)\.py", stage["cmd"].strip())
    assert script, f"unexpected stage command {stage['cmd']!r}"
    return script.group(1).replace("/", ".")


def declared(stage: dict, key: str) -> list[str]:
    return [next(iter(d)) if isinstance(d, dict) else d for d in stage.get(key, [])]


def covers(dep: str, path: str) -> bool:
    """Whether the dvc.yaml dep (a file or a folder) covers the repo path."""
    return path == dep or path.startswith(dep.rstrip("/") + "/")


@pytest.mark.parametrize("name", list(STAGES))
def test_every_project_file_a_stage_runs_is_a_dependency(name):
    stage = STAGES[name]
    entry = entry_module(stage)
    deps = [d for d in declared(stage, "deps") if d.startswith("src/")]
    missing = sorted(str(f.relative_to(REPO)) for f in project_files(entry) if not any(covers(d, str(f.relative_to(REPO))) for d in deps))
    assert not missing, f"stage {name} runs {missing}, which its deps in dvc.yaml do not list"


@pytest.mark.parametrize("name", list(STAGES))
def test_every_code_dependency_is_code_the_stage_runs(name):
    """The other way round: a stage does not re-run for code it never executes."""
    stage = STAGES[name]
    used = {str(f.relative_to(REPO)) for f in project_files(entry_module(stage))}
    unused = [d for d in declared(stage, "deps") if d.startswith("src/") and not any(covers(d, u) for u in used)]
    assert not unused, f"stage {name} lists {unused} in dvc.yaml but never runs them"


@pytest.mark.parametrize("name", list(STAGES))
def test_every_path_a_stage_reads_is_a_dependency_or_an_output(name):
    stage = STAGES[name]
    script = SRC / (entry_module(stage).replace(".", "/") + ".py")
    used = set(re.findall(r"paths\.(\w+)", script.read_text()))
    declared_paths = " ".join(declared(stage, "deps") + declared(stage, "outs") + declared(stage, "metrics"))
    missing = sorted(p for p in used if f"${{paths.{p}}}" not in declared_paths and p != "train_state")
    assert not missing, f"stage {name} uses paths {missing}, which are neither its deps nor its outs"


def test_the_check_sees_lazy_imports_and_whole_packages():
    files = {str(f.relative_to(REPO)) for f in project_files("stages.train")}
    assert "src/ferlab/training/train.py" in files and "src/ferlab/training/models/ferlab_cnn.py" in files  # imported inside functions
    assert "src/ferlab/training/augment.py" in files
