"""The Great Expectations (GX Core 1.x) suite over the raw table, and its report.

Critical expectations describe the contract later stages rely on; a failure stops the
pipeline. Warning expectations measure real FER2013 defects (near-blank frames,
duplicates, leakage between splits, class imbalance): they are counted, not hidden.
"""

import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ferlab.config import Validate
from ferlab.contract import EMOTIONS, FULL_COUNTS, PIXELS_PER_IMAGE, SPLITS, TEST_SPLIT, VAL_SPLIT
from ferlab.data.quality import class_counts, findings, image_facts

CRITICAL, WARNING = "critical", "warning"


@dataclass
class Outcome:
    report: dict
    critical_failures: list[dict]
    warnings: list[dict]


def image_expectations(gx, cfg: Validate, exact: bool) -> list:
    E = gx.expectations
    expectations = [
        *(E.ExpectColumnToExist(column=c, severity=CRITICAL) for c in ("id", "split", "label", "pixels")),
        E.ExpectColumnValuesToBeOfType(column="id", type_="str", severity=CRITICAL),
        E.ExpectColumnValuesToBeOfType(column="split", type_="str", severity=CRITICAL),
        E.ExpectColumnValuesToBeOfType(column="label", type_="int8", severity=CRITICAL),
        # uint8 bytes: every pixel value is 0..255 by construction, so the length is what can break
        E.ExpectColumnValuesToBeOfType(column="pixels", type_="bytes", severity=CRITICAL),
        E.ExpectColumnValuesToNotBeNull(column="id", severity=CRITICAL),
        E.ExpectColumnValuesToBeUnique(column="id", severity=CRITICAL),
        E.ExpectColumnValuesToBeBetween(column="label", min_value=0, max_value=len(EMOTIONS) - 1, severity=CRITICAL),
        E.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS), severity=CRITICAL),
        E.ExpectColumnDistinctValuesToEqualSet(column="split", value_set=list(SPLITS), severity=CRITICAL),
        E.ExpectColumnValuesToBeBetween(column="pixel_count", min_value=PIXELS_PER_IMAGE, max_value=PIXELS_PER_IMAGE, severity=CRITICAL),
        # The share of near-blank frames: a few are FER2013, many mean a broken source.
        E.ExpectColumnValuesToBeInSet(column="near_blank", value_set=[False], mostly=1 - cfg.max_blank_fraction, severity=CRITICAL),
        E.ExpectColumnValuesToBeInSet(column="near_blank", value_set=[False], severity=WARNING),
        E.ExpectColumnValuesToBeInSet(column="duplicate_in_split", value_set=[False], severity=WARNING),
        E.ExpectColumnValuesToBeInSet(column="leaked_from_training", value_set=[False], severity=WARNING),
    ]
    if exact:
        total = sum(sum(c) for c in FULL_COUNTS.values())
        expectations.append(E.ExpectTableRowCountToEqual(value=total, severity=CRITICAL))
    else:
        expectations.append(E.ExpectTableRowCountToBeBetween(min_value=len(SPLITS) * len(EMOTIONS), severity=CRITICAL))
    return expectations


def count_expectations(gx, cfg: Validate) -> list:
    E = gx.expectations
    return [
        # every class present in every split
        E.ExpectColumnValuesToBeBetween(column="n", min_value=1, severity=CRITICAL),
        # exact FER2013 counts when the full dataset is expected (expected_n == n otherwise)
        E.ExpectColumnPairValuesToBeEqual(column_A="n", column_B="expected_n", severity=CRITICAL),
        # class imbalance: classes below this share of their split are reported
        E.ExpectColumnValuesToBeBetween(column="share", min_value=cfg.minority_share_warn, severity=WARNING),
    ]


def _run_suites(frames: dict[str, pd.DataFrame], suites: dict[str, list], docs_dir: Path | None) -> list:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    workdir = Path(tempfile.mkdtemp(prefix="ferlab-gx-"))
    try:
        context = gx.get_context(mode="file", project_root_dir=workdir)
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        if docs_dir is not None:
            context.add_data_docs_site(
                site_name="ferlab",
                site_config={
                    "class_name": "SiteBuilder",
                    "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(Path(docs_dir).resolve())},
                    "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                },
            )
        source = context.data_sources.add_pandas("fer2013")
        results = []
        for name, frame in frames.items():
            batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
            suite = context.suites.add(gx.ExpectationSuite(name=f"fer2013_{name}", expectations=suites[name]))
            definition = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
            actions = [gx.checkpoint.UpdateDataDocsAction(name="docs", site_names=["ferlab"])] if docs_dir else []
            checkpoint = context.checkpoints.add(gx.Checkpoint(name=f"check_{name}", validation_definitions=[definition], actions=actions))
            run = checkpoint.run(batch_parameters={"dataframe": frame})
            results.extend(r for v in run.run_results.values() for r in v.results)
        if docs_dir is not None:
            context.build_data_docs(site_names=["ferlab"])
        return results
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _describe(result) -> dict:
    config = result.expectation_config
    kwargs = {k: v for k, v in config.kwargs.items() if k not in ("batch_id",)}
    observed = result.result or {}
    return {
        "expectation": config.type,
        "severity": getattr(config.severity, "value", config.severity),  # a FailureSeverity enum
        "kwargs": kwargs,
        "success": bool(result.success),
        "unexpected_count": observed.get("unexpected_count"),
        "observed_value": observed.get("observed_value"),
        "partial_unexpected_list": [str(v) for v in (observed.get("partial_unexpected_list") or [])][:5],
        "exception": (result.exception_info or {}).get("exception_message") if result.exception_info else None,
    }


def validate(table: pd.DataFrame, cfg: Validate, exact: bool, docs_dir: Path | None = None) -> Outcome:
    facts = image_facts(table, cfg.blank_std_max)
    counts = class_counts(table, exact)
    with warnings.catch_warnings():
        # GX imports pyspark where it is installed (the dev extra has it), which warns that it does
        # not fully support pandas 3: nothing the user can act on
        warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
        import great_expectations as gx

        suites = {"images": image_expectations(gx, cfg, exact), "class_counts": count_expectations(gx, cfg)}
        checked = [_describe(r) for r in _run_suites({"images": facts, "class_counts": counts}, suites, docs_dir)]
    critical = [c for c in checked if not c["success"] and c["severity"] == CRITICAL]
    warned = [c for c in checked if not c["success"] and c["severity"] != CRITICAL]
    report = {
        "success": not critical,
        "rows": len(table),
        "exact_counts": exact,
        "critical_failures": len(critical),
        "warnings": len(warned),
        "findings": findings(facts)
        | {
            "class_share": {s: dict(zip(EMOTIONS, counts.loc[counts["split"] == s, "share"].round(4))) for s in SPLITS},
            "test_splits": [VAL_SPLIT, TEST_SPLIT],
        },
        "expectations": checked,
    }
    return Outcome(report, critical, warned)


def summary_lines(outcome: Outcome, report_path: str) -> list[str]:
    """The one-screen summary printed when validation stops the pipeline."""
    lines = [f"validation failed: {len(outcome.critical_failures)} critical expectation(s) not met"]
    for c in outcome.critical_failures[:12]:
        column = c["kwargs"].get("column") or c["kwargs"].get("column_A") or "table"
        detail = c["exception"] or (
            f"{c['unexpected_count']} unexpected, e.g. {', '.join(c['partial_unexpected_list'][:3])}"
            if c["unexpected_count"]
            else f"observed {c['observed_value']}"
        )
        lines.append(f"  - {c['expectation']} on {column}: {detail}")
    lines.append(f"full report: {report_path} (and Data Docs: index.html beside it)")
    return lines
