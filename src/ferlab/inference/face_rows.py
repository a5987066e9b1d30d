"""One row per face, as `ferlab batch` writes it and the Spark scorer returns it.

Columns: `path`, `face` (0 for the largest face of the image, 1 for the next, ...), then
`Face.ROW_FIELDS` (x, y, w, h, confidence, emotion and the 7 probabilities, as `ferlab detect --csv`
writes them), then `error`. An image gives one row per face; an image without a face gives one
row with `face` and every face column empty; an image that could not be read gives one such row
with `error` saying why (one sentence). So "no face" is `face` null and `error` null.
"""

import csv
import io

from ferlab.contract import EMOTIONS
from ferlab.errors import FerlabError
from ferlab.inference.predict import Face

# (name, Arrow type name, Spark SQL type): the one list both schemas come from.
COLUMNS = (
    ("path", "string", "string"),
    ("face", "int32", "int"),
    *((name, "int32", "int") for name in ("x", "y", "w", "h")),
    ("confidence", "float64", "double"),
    ("emotion", "string", "string"),
    *((name, "float64", "double") for name in EMOTIONS),
    ("error", "string", "string"),
)
FIELDS = tuple(name for name, _, _ in COLUMNS)
assert FIELDS[2:-1] == Face.ROW_FIELDS
SPARK_SCHEMA = ", ".join(f"`{name}` {spark}" for name, _, spark in COLUMNS)


def arrow_schema():
    import pyarrow as pa

    return pa.schema([(name, getattr(pa, arrow)()) for name, arrow, _ in COLUMNS])


def _of_the_seven(found: list[Face] | FerlabError) -> None:
    """The columns are FER2013's seven emotions: a model that answers with others (ferlab adapt --emotions) is
    refused in one sentence, never written under the wrong names."""
    if found and not isinstance(found, FerlabError) and tuple(found[0].probabilities) != EMOTIONS:
        raise FerlabError(
            f"ferlab batch and the Spark scorer write a column for each of FER2013's seven emotions, and this model "
            f"answers with {', '.join(found[0].probabilities)} (adapted to fewer emotions); score its images with "
            "`ferlab detect --csv`, which names its own columns."
        )


def rows_of(path: str, found: list[Face] | FerlabError) -> list[list]:
    """The typed rows of one image: its faces, largest first, or one row saying no face or why it was not read."""
    _of_the_seven(found)
    if isinstance(found, FerlabError):
        return [[path, None, *[None] * len(Face.ROW_FIELDS), str(found)]]
    if not found:
        return [[path, None, *[None] * len(Face.ROW_FIELDS), None]]
    return [[path, i, *face.values(), None] for i, face in enumerate(found)]


def csv_rows_of(path: str, found: list[Face] | FerlabError) -> list[list]:
    """rows_of as `ferlab detect --csv` writes a face (Face.to_row); empty cells for null."""
    _of_the_seven(found)
    if isinstance(found, FerlabError):
        return [[path, "", *[""] * len(Face.ROW_FIELDS), str(found)]]
    if not found:
        return [[path, "", *[""] * len(Face.ROW_FIELDS), ""]]
    return [[path, i, *face.to_row(), ""] for i, face in enumerate(found)]


def table(rows: list[list]):
    """Typed rows -> a pyarrow Table of COLUMNS."""
    import pyarrow as pa

    schema = arrow_schema()
    return pa.table({name: pa.array([row[i] for row in rows], schema.field(name).type) for i, name in enumerate(FIELDS)}, schema=schema)


def csv_text(rows: list[list], header: bool = True) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if header:
        writer.writerow(FIELDS)
    writer.writerows(rows)
    return out.getvalue()
