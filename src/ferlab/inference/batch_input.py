"""What `ferlab batch` scores: a list of image files (a folder or a glob, expanded by the CLI),
a CSV or Parquet table of paths, or a Parquet table of encoded images.

- CSV: a `path` column (any case); relative paths are read from the CSV's folder and written
  to the output as the CSV spells them.
- Parquet with a column of encoded images (JPEG, PNG, ...): a binary column, preferably named
  `content` (what Spark's binaryFile source gives), `image` or `bytes`, or a struct column with a
  binary field `bytes` (Hugging Face datasets); the `path` column names the rows, else
  `<table>#<row>`. Parts never cross a row group, so a worker reads only its own row group.
- Parquet with a `path` column and no images: a table of paths, as the CSV.
"""

import csv
from dataclasses import dataclass
from pathlib import Path

from ferlab.errors import FerlabError

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")
IMAGE_COLUMNS = ("content", "image", "bytes")


@dataclass(frozen=True)
class Slice:
    """The images of one part: their names in the output, and where to read them."""

    keys: list[str]
    paths: list[str] | None = None  # image files, or:
    parquet: str | None = None  # a Parquet file, its image column, and rows of one row group
    column: str | None = None
    group: int = 0
    offset: int = 0

    def load(self) -> list[str | tuple[str, bytes]]:
        """What EmotionRecognizer.predict_files takes: paths, or (name, encoded bytes)."""
        if self.paths is not None:
            return list(self.paths)
        import pyarrow.parquet as pq

        try:
            column = pq.ParquetFile(self.parquet).read_row_group(self.group, columns=[self.column]).column(0)
        except OSError as err:
            raise FerlabError(f"{self.parquet} cannot be read any more ({err}); check that it is still there and complete.") from None
        column = column.slice(self.offset, len(self.keys))
        if hasattr(column.type, "get_field_index"):  # struct<bytes, path>
            column = column.combine_chunks().field("bytes")
        return list(zip(self.keys, column.to_pylist()))


@dataclass(frozen=True)
class BatchInput:
    source: str  # what the user named
    keys: list[str]  # the output's path of each image, in order
    paths: list[str] | None = None  # the file to read for each key
    parquet: str | None = None
    column: str | None = None
    group_rows: tuple[int, ...] = ()  # rows per row group of the Parquet file

    def parts(self, size: int) -> list[Slice]:
        """The images split in parts of at most `size`, in order."""
        if self.paths is not None:
            return [Slice(self.keys[i : i + size], self.paths[i : i + size]) for i in range(0, len(self.keys), size)]
        parts, start = [], 0
        for group, rows in enumerate(self.group_rows):
            for offset in range(0, rows, size):
                n = min(size, rows - offset)
                parts.append(Slice(self.keys[start + offset : start + offset + n], None, self.parquet, self.column, group, offset))
            start += rows
        return parts


def of_files(source: str, files: list[str]) -> BatchInput:
    return BatchInput(source, list(files), list(files))


def is_table(source: str) -> bool:
    return Path(source).suffix.lower() in TABLE_SUFFIXES and Path(source).is_file()


def read_table(source: str) -> BatchInput:
    """A CSV or Parquet table of paths, or a Parquet table of images."""
    path = Path(source)
    if path.suffix.lower() == ".csv":
        return _paths(source, _csv_paths(path), path.parent)
    return _parquet(path)


def _paths(source: str, keys: list[str], folder: Path) -> BatchInput:
    if not keys:
        raise FerlabError(f"{source} lists no images.")
    return BatchInput(source, keys, [k if Path(k).is_absolute() else str(folder / k) for k in keys])


def _csv_paths(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = {name.strip().lower(): name for name in reader.fieldnames or []}
            if "path" not in columns:
                raise FerlabError(f"{path} needs a column named path; it has {', '.join(reader.fieldnames or []) or 'none'}.")
            return [row[columns["path"]].strip() for row in reader if (row[columns["path"]] or "").strip()]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise FerlabError(f"{path} is not a readable CSV file ({err}).") from None


def _image_column(schema) -> str | None:
    import pyarrow as pa

    def holds_images(field) -> bool:
        t = field.type
        if pa.types.is_binary(t) or pa.types.is_large_binary(t):
            return True
        return pa.types.is_struct(t) and t.get_field_index("bytes") >= 0 and pa.types.is_binary(t.field("bytes").type)

    found = [f.name for f in schema if holds_images(f)]
    return next((name for name in IMAGE_COLUMNS if name in found), found[0] if found else None)


def _parquet(path: Path) -> BatchInput:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except (OSError, pa.ArrowInvalid) as err:
        raise FerlabError(f"{path} is not a readable Parquet file ({err}).") from None
    schema = table.schema_arrow
    column = _image_column(schema)
    has_path = "path" in schema.names and pa.types.is_string(schema.field("path").type)
    if column is None and not has_path:
        raise FerlabError(
            f"{path} has neither a column of encoded images (binary, e.g. content) nor a path column; "
            f"its columns are {', '.join(schema.names)}."
        )
    names = table.read(columns=["path"]).column(0).to_pylist() if has_path else None
    if column is None:
        return _paths(str(path), [n for n in names if n], path.parent)
    groups = tuple(table.metadata.row_group(g).num_rows for g in range(table.num_row_groups))
    keys = [name or f"{path}#{row}" for row, name in enumerate(names or [None] * sum(groups))]
    if not keys:
        raise FerlabError(f"{path} holds no rows.")
    return BatchInput(str(path), keys, None, str(path), column, groups)
