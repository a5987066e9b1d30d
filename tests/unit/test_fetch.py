import hashlib
import json

import pytest
from conftest import write_zip

from ferlab.config import Fetch, Params
from ferlab.data import kaggle, sources
from ferlab.data.fetch import fetch
from ferlab.data.table import read_table
from ferlab.errors import DataError


def make_params(**fetch_options) -> Params:
    return Params(fetch=Fetch(**({"candidates": []} | fetch_options)))


def test_fetch_writes_table_and_summary(tmp_path, small_zip):
    summary = fetch(make_params(source=str(small_zip)), tmp_path)
    table = read_table(tmp_path / "data/raw/fer2013.parquet")
    assert summary["rows"] == len(table) == 84
    assert summary["source"]["sha256"] == hashlib.sha256(small_zip.read_bytes()).hexdigest()
    assert summary["counts"]["PrivateTest"]["disgust"] == 4
    assert json.loads((tmp_path / "data/raw/summary.json").read_text())["table_sha256"] == summary["table_sha256"]


def test_drop_folder_comes_before_candidates(tmp_path, small_zip, archive_members):
    drop = tmp_path / "data/external"
    drop.mkdir(parents=True)
    one_split = {k: v for k, v in archive_members.items() if k.startswith("train/")}
    write_zip(drop / "archive.zip", one_split)
    params = make_params(candidates=[str(small_zip)])
    source = sources.resolve("auto", tmp_path, "data/external", [str(small_zip)], "cache")
    assert source.path == (drop / "archive.zip").resolve()
    assert fetch(params, tmp_path)["rows"] == len(one_split)


def test_missing_dataset_names_every_way_to_provide_it(tmp_path, monkeypatch):
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.delenv("KAGGLE_KEY", raising=False)
    monkeypatch.delenv("KAGGLE_API_TOKEN", raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-kaggle"))
    with pytest.raises(DataError) as err:
        fetch(make_params(candidates=["nowhere/archive.zip"]), tmp_path)
    message = str(err.value)
    assert "FER2013 was not found" in message
    assert "data/external" in message and "fetch.source=" in message and "kaggle.json" in message
    assert "nowhere/archive.zip" in message


def test_checksum_mismatch_stops_and_keeps_previous_output(tmp_path, small_zip):
    fetch(make_params(source=str(small_zip)), tmp_path)
    before = (tmp_path / "data/raw/fer2013.parquet").read_bytes()
    with pytest.raises(DataError, match="has SHA-256 .* expected 0000"):
        fetch(make_params(source=str(small_zip), sha256={"archive.zip": "0" * 64}), tmp_path)
    assert (tmp_path / "data/raw/fer2013.parquet").read_bytes() == before


def test_sha256sums_file_next_to_the_archive_is_used(tmp_path, small_zip):
    (small_zip.parent / "SHA256SUMS").write_text(f"{'1' * 64}  archive.zip\n")
    with pytest.raises(DataError, match="expected 1111"):
        fetch(make_params(source=str(small_zip)), tmp_path)


def test_corrupt_archive_keeps_previous_output(tmp_path, small_zip):
    fetch(make_params(source=str(small_zip)), tmp_path)
    before = (tmp_path / "data/raw/summary.json").read_text()
    broken = tmp_path / "broken.zip"
    broken.write_bytes(small_zip.read_bytes()[:1000])
    with pytest.raises(DataError, match="broken.zip is not a readable zip archive"):
        fetch(make_params(source=str(broken)), tmp_path)
    assert (tmp_path / "data/raw/summary.json").read_text() == before


def test_unreadable_image_stops_fetch_unless_allowed(tmp_path, archive_members):
    members = dict(archive_members)
    broken = sorted(members)[0]
    members[broken] = b"garbage"
    path = write_zip(tmp_path / "archive.zip", members)
    with pytest.raises(DataError, match=rf"1 image\(s\) could not be read \({broken}: not a decodable image"):
        fetch(make_params(source=str(path)), tmp_path)
    summary = fetch(make_params(source=str(path), max_unreadable=1), tmp_path)
    assert summary["unreadable"] == [f"{broken}: not a decodable image"]
    assert summary["rows"] == len(members) - 1


class FakeKaggle:
    """Stands in for KaggleApi: writes the zip a real download would."""

    def __init__(self, payload: bytes):
        self.payload, self.calls = payload, []

    def dataset_download_files(self, dataset, path, unzip, quiet):
        self.calls.append(dataset)
        (__import__("pathlib").Path(path) / "fer2013.zip").write_bytes(self.payload)


def test_kaggle_source_downloads_once_and_reads_it(tmp_path, small_zip):
    client = FakeKaggle(small_zip.read_bytes())
    params = make_params(source="kaggle")
    assert fetch(params, tmp_path, client_factory=lambda: client)["rows"] == 84
    assert fetch(params, tmp_path, client_factory=lambda: client)["source"]["path"].endswith("fer2013.zip")
    assert client.calls == [kaggle.DATASET]


def test_kaggle_failure_is_explained(tmp_path):
    class Refusing:
        def dataset_download_files(self, *a, **k):
            raise RuntimeError("401 Unauthorized")

    with pytest.raises(DataError, match="downloading msambare/fer2013 from Kaggle failed \\(401 Unauthorized\\)"):
        fetch(make_params(source="kaggle"), tmp_path, client_factory=Refusing)


def test_kaggle_without_credentials_says_what_to_do(tmp_path, monkeypatch):
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path))
    with pytest.raises(DataError, match="no Kaggle credentials found: create an API token .* ~/.kaggle/kaggle.json"):
        fetch(make_params(source="kaggle"), tmp_path)


def test_credentials_detected_from_env_or_file(tmp_path):
    assert kaggle.credentials_present({"KAGGLE_USERNAME": "u", "KAGGLE_KEY": "k"}, home=tmp_path)
    assert not kaggle.credentials_present({}, home=tmp_path)
    (tmp_path / ".kaggle").mkdir()
    (tmp_path / ".kaggle" / "kaggle.json").write_text("{}")
    assert kaggle.credentials_present({}, home=tmp_path)
