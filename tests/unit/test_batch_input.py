"""What `ferlab batch` reads: tables of paths and Parquet tables of encoded images, split in parts."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ferlab.errors import FerlabError
from ferlab.inference import batch_input
from ferlab.inference.face_rows import SEVEN
from ferlab.inference.predict import Face


def test_parquet_parts_follow_row_groups_and_read_their_own_rows(tmp_path):
    blobs = [f"image {i}".encode() for i in range(7)]
    pq.write_table(pa.table({"path": [f"p{i}.jpg" for i in range(7)], "content": blobs}), tmp_path / "t.parquet", row_group_size=3)
    found = batch_input.read_table(str(tmp_path / "t.parquet"))
    parts = found.parts(2)
    assert [len(p.keys) for p in parts] == [2, 1, 2, 1, 1]  # groups of 3, 3, 1
    assert [entry for p in parts for entry in p.load()] == [(f"p{i}.jpg", blobs[i]) for i in range(7)]


def test_images_in_a_struct_column_and_rows_without_a_path(tmp_path):
    images = [{"bytes": b"a", "path": None}, {"bytes": b"b", "path": None}]  # Hugging Face datasets' image column
    pq.write_table(pa.table({"label": [1, 2], "image": images}), tmp_path / "hf.parquet")
    found = batch_input.read_table(str(tmp_path / "hf.parquet"))
    (part,) = found.parts(10)
    assert part.load() == [(f"{tmp_path / 'hf.parquet'}#0", b"a"), (f"{tmp_path / 'hf.parquet'}#1", b"b")]


def test_tables_of_paths_are_read_from_their_own_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "list.csv").write_text("PATH\nx.jpg\n\n/abs/y.png\n")
    pq.write_table(pa.table({"path": ["x.jpg", None]}), tmp_path / "sub" / "list.parquet")
    csv_input = batch_input.read_table(str(tmp_path / "sub" / "list.csv"))
    assert csv_input.keys == ["x.jpg", "/abs/y.png"]
    assert csv_input.paths == [str(tmp_path / "sub" / "x.jpg"), "/abs/y.png"]
    assert batch_input.read_table(str(tmp_path / "sub" / "list.parquet")).paths == [str(tmp_path / "sub" / "x.jpg")]


def test_tables_that_are_not_inputs_say_why(tmp_path):
    (tmp_path / "empty.csv").write_text("path\n")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(FerlabError, match=r"empty.csv lists no images\.$"):
        batch_input.read_table(str(tmp_path / "empty.csv"))
    with pytest.raises(FerlabError, match=r"broken.parquet is not a readable Parquet file"):
        batch_input.read_table(str(tmp_path / "broken.parquet"))


def test_rows_tell_no_face_from_not_read_and_keep_detects_columns():
    face = Face((1, 2, 30, 30), None, {e: 1 / 7 for e in Face.ROW_FIELDS[6:]})
    found = {"a.jpg": [face, face], "b.jpg": [], "c.jpg": FerlabError("c.jpg is bad.")}
    table = SEVEN.table([row for path, faces in found.items() for row in SEVEN.rows_of(path, faces)]).to_pylist()
    assert [(r["path"], r["face"], r["x"], r["error"]) for r in table] == [
        ("a.jpg", 0, 1, None),
        ("a.jpg", 1, 1, None),
        ("b.jpg", None, None, None),
        ("c.jpg", None, None, "c.jpg is bad."),
    ]
    assert SEVEN.csv_rows_of("a.jpg", [face])[0][2:-1] == face.to_row()  # the CSV writes a face as ferlab detect --csv does
    assert "`happy` double" in SEVEN.spark_schema and SEVEN.spark_schema.startswith("`path` string, `face` int")
