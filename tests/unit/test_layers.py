"""The package's layers (README, Layout): a module imports only from its own layer and the ones
below, so the tree reads as the architecture; and inference stays free of TensorFlow."""

import ast
import subprocess
import sys

import pytest
from conftest import REPO

SRC = REPO / "src" / "ferlab"

# Lowest first. A module may import from its own layer and every layer before it.
LAYERS = [
    {"errors", "fileio", "quiet", "litert", "contract", "config"},
    {"plots", "stage"},
    {"data"},
    {"training"},
    {"lifecycle"},
    {"inference"},
    {"serve"},
    {"cli"},
]
FOUNDATION_IMPORTS = {"contract": set(), "config": {"errors"}}  # the two facts every layer reads


def layer_of(part: str) -> int:
    return next(i for i, parts in enumerate(LAYERS) if part in parts)


def modules():
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        if rel.parts == ("__init__.py",):
            continue
        yield rel.parts[0].removesuffix(".py"), path


def ferlab_imports(path):
    """The ferlab modules an import statement of the file names, lazy imports in functions included."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ferlab"):
            names = [node.module] if node.module != "ferlab" else [f"ferlab.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("ferlab")]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if len(parts) > 1 and parts[1] != "__version__":
                yield parts[1]


def test_every_module_belongs_to_a_layer():
    unplaced = sorted({top for top, _ in modules() if not any(top in parts for parts in LAYERS)})
    assert not unplaced, f"add {unplaced} to a layer in this test and in the README's Layout"


@pytest.mark.parametrize("top,path", list(modules()), ids=lambda v: str(v.relative_to(SRC)) if hasattr(v, "relative_to") else v)
def test_imports_go_down_the_layers(top, path):
    upward = sorted({name for name in ferlab_imports(path) if layer_of(name) > layer_of(top)})
    assert not upward, f"{path.relative_to(SRC)} ({top}) imports {upward}, a higher layer"
    if top in FOUNDATION_IMPORTS:
        extra = set(ferlab_imports(path)) - FOUNDATION_IMPORTS[top] - {top}
        assert not extra, f"{path.relative_to(SRC)} must stand alone but imports {sorted(extra)}"


def test_the_layer_check_sees_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from ferlab.inference.predict import EmotionRecognizer\n")
    assert set(ferlab_imports(bad)) == {"inference"} and layer_of("inference") > layer_of("training")


def test_inference_service_and_cli_modules_import_without_tensorflow():
    """Importing every inference, serve and cli module loads neither TensorFlow nor Keras: only a
    Keras model that is asked for does (checked with a real model in test_runtimes)."""
    names = sorted(
        ".".join(("ferlab", *p.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__")
        for part in ("inference", "serve", "cli")
        for p in (SRC / part).rglob("*.py")
        if p.name != "__main__.py"
    )
    probe = (
        f"import importlib, sys\nfor n in {names!r}: importlib.import_module(n)\nprint('tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"], f"{len(names)} modules imported; TensorFlow, Keras loaded: {result.stdout}"
