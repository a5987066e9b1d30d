import zipfile

import pytest
from conftest import csv_text, write_zip

from ferlab.contract import EMOTIONS, SPLITS
from ferlab.data import readers
from ferlab.data.table import images_of
from ferlab.errors import DataError


def test_archive_keeps_three_splits_and_all_classes(small_zip):
    table = readers.read_image_archive(small_zip).table
    assert len(table) == 4 * len(EMOTIONS) * len(SPLITS)
    assert set(table["split"]) == set(SPLITS)
    for split in SPLITS:
        assert sorted(table.loc[table["split"] == split, "label"].unique()) == list(range(len(EMOTIONS)))
    assert table["id"].is_unique
    assert images_of(table).shape == (len(table), 48, 48)


def test_extracted_folder_reads_the_same_as_the_zip(small_zip, tmp_path):
    folder = tmp_path / "extracted"
    with zipfile.ZipFile(small_zip) as zf:
        zf.extractall(folder)
    from_zip = readers.read_image_archive(small_zip).table
    from_folder = readers.read_image_folder(folder).table
    assert from_zip.equals(from_folder)


def test_csv_reads_the_same_pixels_as_the_archive(small_zip, small_csv_rows, tmp_path):
    path = tmp_path / "fer2013.csv"
    path.write_text(csv_text(small_csv_rows))
    table = readers.read_csv(path).table
    archive_table = readers.read_image_archive(small_zip).table
    assert len(table) == len(archive_table)
    assert sorted(map(bytes, table["pixels"])) == sorted(map(bytes, archive_table["pixels"]))
    assert table.groupby("split").size().to_dict() == archive_table.groupby("split").size().to_dict()


def test_stratified_slice_takes_n_per_split_and_class(small_zip):
    table = readers.read_image_archive(small_zip, limit=2, seed=1).table
    assert table.groupby(["split", "label"]).size().eq(2).all()
    assert len(table) == 2 * len(EMOTIONS) * len(SPLITS)
    again = readers.read_image_archive(small_zip, limit=2, seed=1).table
    assert table["id"].tolist() == again["id"].tolist()


def test_zip_with_wrong_folders_is_not_fer2013(tmp_path, archive_members):
    data = next(iter(archive_members.values()))
    path = write_zip(tmp_path / "cats.zip", {"images/cat1.jpg": data, "images/cat2.jpg": data})
    with pytest.raises(DataError, match=r"cats.zip is not the FER2013 image-folder layout.*found top-level entries images"):
        readers.read_image_archive(path)


def test_split_in_wrong_folder_is_reported(tmp_path, archive_members):
    data = next(iter(archive_members.values()))
    path = write_zip(tmp_path / "mixed.zip", {"test/happy/Training_1.jpg": data})
    with pytest.raises(DataError, match="Training image inside test/"):
        readers.read_image_archive(path)


def test_truncated_zip_is_a_clear_error(small_zip, tmp_path):
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(small_zip.read_bytes()[: small_zip.stat().st_size // 2])
    with pytest.raises(DataError, match="truncated.zip is not a readable zip archive.*download it again"):
        readers.read_image_archive(truncated)


def test_undecodable_jpeg_is_reported_not_dropped_silently(tmp_path, archive_members):
    members = dict(archive_members)
    broken = next(name for name in members if name.startswith("train/happy/"))
    members[broken] = b"\xff\xd8\xff\xe0 not really a jpeg"
    result = readers.read_image_archive(write_zip(tmp_path / "a.zip", members))
    assert [p.split(":")[0] for p in result.unreadable] == [broken]
    assert len(result.table) == len(members) - 1


def _csv(tmp_path, text):
    path = tmp_path / "fer2013.csv"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "mutate, message",
    [
        (
            lambda rows: [(y, p.ravel()[:-1] if i == 3 else p, u) for i, (y, p, u) in enumerate(rows)],
            r"line 5: 2303 pixels instead of 2304",
        ),
        (lambda rows: [(9 if i == 2 else y, p, u) for i, (y, p, u) in enumerate(rows)], r"line 4: emotion '9' is not a label id 0..6"),
        (lambda rows: [(y, p, "Validation" if i == 0 else u) for i, (y, p, u) in enumerate(rows)], r"line 2: unknown Usage 'Validation'"),
    ],
)
def test_bad_csv_rows_name_the_line(tmp_path, small_csv_rows, mutate, message):
    path = _csv(tmp_path, csv_text(mutate(small_csv_rows)))
    with pytest.raises(DataError, match=rf"fer2013.csv, {message}"):
        readers.read_csv(path)


def test_csv_without_a_column_names_what_is_missing(tmp_path, small_csv_rows):
    text = csv_text(small_csv_rows).replace("emotion,pixels,Usage", "emotion,pixels,Split")
    with pytest.raises(DataError, match="lacks the column\\(s\\) Usage.*found emotion, pixels, Split"):
        readers.read_csv(_csv(tmp_path, text))


def test_pixel_value_out_of_range_is_rejected(tmp_path, small_csv_rows):
    label, pixels, usage = small_csv_rows[0]
    text = csv_text(small_csv_rows[1:]) + f"{label},{' '.join(['300'] * 2304)},{usage}\n"
    with pytest.raises(DataError, match="pixel values must lie in 0..255"):
        readers.read_csv(_csv(tmp_path, text))
