"""What pip installs: the ferlab package alone, at the versions CI tested."""

from conftest import REPO


def test_the_wheel_installs_ferlab_and_not_the_stage_scripts():
    import tomllib

    from setuptools import find_packages

    found = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = find_packages(where=str(REPO / found["where"][0]), include=found["include"])
    assert {"ferlab", "ferlab.data", "ferlab.training", "ferlab.training.models", "ferlab.lifecycle", "ferlab.inference"} <= set(packages)
    assert {"ferlab.serve", "ferlab.cli"} <= set(packages)
    assert not [p for p in packages if p.split(".")[0] != "ferlab"]


def test_every_dependency_has_its_tested_version_in_the_lock():
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pinned = {
        canonicalize_name(line.split("==")[0])
        for line in (REPO / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    }
    wanted = {canonicalize_name(Requirement(r).name) for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    assert wanted - pinned == set()
    assert all("==" in line for line in (REPO / "constraints.txt").read_text().splitlines() if line and not line.startswith("#"))


def test_the_registered_model_names_the_versions_in_use():
    from importlib.metadata import version

    from ferlab.lifecycle.pyfunc import pinned_requirements

    pins = dict(r.split("==") for r in pinned_requirements())
    assert pins["tensorflow"] == version("tensorflow") and pins["keras"] == version("keras") and pins["numpy"] == version("numpy")
