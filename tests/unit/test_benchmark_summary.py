"""benchmarks/summary.py builds its page from every JSON report committed under reports/benchmarks/:
a report written in another shape breaks the page, and this test names it."""

import shutil
import subprocess
import sys

from conftest import REPO

REPORTS = REPO / "reports/benchmarks"


def test_the_summary_page_takes_in_every_committed_report(tmp_path):
    shutil.copytree(REPORTS, tmp_path / "reports/benchmarks")
    done = subprocess.run([sys.executable, str(REPO / "benchmarks/summary.py")], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "reports/benchmarks/summary.md").read_text()
    for pattern in ("corrupted_accuracy*.json", "framed_accuracy*.json", "vs_fer*.json", "inference*.json", "filled_faces.json"):
        for report in sorted(REPORTS.glob(pattern)):
            assert f"`{report.name}`" in page
    assert page.count("| epoch | minutes of training |") == len(list(REPORTS.glob("time_to_accuracy*.json")))
