"""DVC stage `validate`: the Great Expectations suite over data/raw/ -> reports/validation/."""

import sys
from pathlib import Path

from ferlab import config, plots
from ferlab.data.table import class_counts, read_table
from ferlab.data.validation import summary_lines, validate
from ferlab.fileio import atomic_path, read_json, write_json
from ferlab.stage import log, run


def main() -> None:
    params = config.load()
    cfg = params.validate
    table = read_table(params.paths.raw_table)
    sliced = read_json(params.paths.raw_summary).get("limit_per_class") is not None
    exact = not sliced if cfg.exact_counts == "auto" else cfg.exact_counts in ("yes", True)  # YAML reads a bare yes as true
    out = Path(params.paths.validation_report)
    log(f"validating {len(table):,} rows ({'exact' if exact else 'slice'} counts)")
    with atomic_path(out) as staged:
        staged.mkdir()
        outcome = validate(table, cfg, exact, docs_dir=staged / "data_docs")
        write_json(staged / "report.json", outcome.report)
        plots.class_distribution(class_counts(table), staged / "class_distribution.png")
    report_path = out / "report.json"
    f = outcome.report["findings"]
    log(f"near-blank images per split: {f['near_blank']}")
    log(f"duplicates within splits: { {s: d['images'] for s, d in f['duplicates_within_split'].items()} }")
    log(f"duplicates across splits: {f['duplicates_across_splits']}")
    log(f"{outcome.report['warnings']} warning(s), {outcome.report['critical_failures']} critical failure(s); report: {report_path}")
    if outcome.critical_failures:
        print("\n".join(summary_lines(outcome, str(report_path))), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    run(main)
