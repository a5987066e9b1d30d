import numpy as np
import pandas as pd
import pytest

from ferlab.config import Validate
from ferlab.data import readers
from ferlab.data.table import make_table
from ferlab.data.validation import summary_lines, validate

# Great Expectations imports pyspark where it is installed (the dev extra): its pandas-3 warning must not
# reach the validate stage's output
pytestmark = pytest.mark.filterwarnings("error:PySpark does not yet:FutureWarning")


@pytest.fixture(scope="module")
def table(archive):
    return readers.read_image_archive(archive, limit=3, seed=0).table


def failed(outcome, severity="critical"):
    items = outcome.critical_failures if severity == "critical" else outcome.warnings
    return {(c["expectation"], c["kwargs"].get("column")) for c in items}


def test_clean_slice_passes(table):
    outcome = validate(table, Validate(), exact=False)
    assert outcome.report["success"], outcome.critical_failures
    assert outcome.report["rows"] == len(table)


def test_slice_fails_exact_counts(table):
    outcome = validate(table, Validate(), exact=True)
    assert ("expect_table_row_count_to_equal", None) in failed(outcome)
    assert ("expect_column_pair_values_to_be_equal", None) in failed(outcome)


def test_contract_violations_are_critical(table):
    bad = table.copy()
    bad.loc[0, "label"] = 9
    bad.loc[1, "split"] = "Validation"
    bad.loc[2, "pixels"] = bad.loc[2, "pixels"][:-1]
    bad.loc[3, "id"] = bad.loc[4, "id"]
    outcome = validate(bad, Validate(), exact=False)
    got = failed(outcome)
    assert ("expect_column_values_to_be_between", "label") in got
    assert ("expect_column_values_to_be_in_set", "split") in got
    assert ("expect_column_values_to_be_between", "pixel_count") in got
    assert ("expect_column_values_to_be_unique", "id") in got
    lines = summary_lines(outcome, "reports/validation/report.json")
    assert lines[0].startswith("validation failed: ") and lines[-1].startswith("full report: reports/validation/report.json")
    assert any("label" in line and "1 unexpected" in line for line in lines)


def test_missing_class_in_a_split_is_critical(table):
    bad = table[~((table["split"] == "PrivateTest") & (table["label"] == 1))]
    assert ("expect_column_values_to_be_between", "n") in failed(validate(bad, Validate(), exact=False))


def test_blank_images_and_duplicates_are_counted_as_warnings(table):
    extra = table.iloc[:2].copy()
    extra["id"] = ["copy_a", "copy_b"]
    extra["split"] = ["Training", "PrivateTest"]  # a duplicate in Training and a leak into PrivateTest
    blank = make_table(["blank_1"], ["Training"], [3], np.full((1, 48, 48), 7, np.uint8))  # not a copy of a black frame
    grown = pd.concat([table, extra, blank], ignore_index=True)
    base = validate(table, Validate(max_blank_fraction=0.5), exact=False).report["findings"]
    outcome = validate(grown, Validate(max_blank_fraction=0.5), exact=False)
    assert outcome.report["success"]
    f = outcome.report["findings"]
    assert f["near_blank"]["Training"] == base["near_blank"]["Training"] + 1
    assert f["duplicates_within_split"]["Training"]["images"] == base["duplicates_within_split"]["Training"]["images"] + 2
    assert f["duplicates_across_splits"]["Training~PrivateTest"] == base["duplicates_across_splits"]["Training~PrivateTest"] + 1
    warned = failed(outcome, "warning")
    assert ("expect_column_values_to_be_in_set", "near_blank") in warned
    assert ("expect_column_values_to_be_in_set", "leaked_from_training") in warned
    # disgust is below 5% of every split of FER2013, but not of this stratified slice
    assert ("expect_column_values_to_be_between", "share") not in warned


def test_too_many_blank_images_is_critical(table):
    blanks = make_table([f"b{i}" for i in range(10)], ["Training"] * 10, [0] * 10, np.zeros((10, 48, 48), np.uint8))
    outcome = validate(pd.concat([table, blanks], ignore_index=True), Validate(max_blank_fraction=0.05), exact=False)
    assert ("expect_column_values_to_be_in_set", "near_blank") in failed(outcome)


def test_data_docs_are_written(table, tmp_path):
    validate(table, Validate(), exact=False, docs_dir=tmp_path / "docs")
    assert (tmp_path / "docs" / "index.html").is_file()
