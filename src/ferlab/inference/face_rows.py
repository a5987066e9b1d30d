"""One row per face, as `ferlab batch` writes it and the Spark scorer returns it.

Columns: `path`, `face` (0 for the largest face of the image, 1 for the next, ...), then
`Face.row_fields(emotions)` (x, y, w, h, confidence, emotion and one probability per emotion of the
model, as `ferlab detect --csv` writes them), then `error`. The emotions are the model's own: FER2013's
seven, or the subset a model made by `ferlab adapt --emotions` answers with, in its order. An image
gives one row per face; an image without a face gives one row with `face` and every face column empty;
an image that could not be read gives one such row with `error` saying why (one sentence). So
"no face" is `face` null and `error` null.

    table = FaceRows(recognizer.emotions)
    rows = table.rows_of("a.jpg", faces)
    table.table(rows)         # a pyarrow Table; table.spark_schema for mapInArrow
"""

import csv
import io

from ferlab.contract import EMOTIONS
from ferlab.errors import FerlabError
from ferlab.inference.predict import Face


class FaceRows:
    """The columns of a model's faces table and its rows, in typed (Arrow, Spark) and CSV form."""

    def __init__(self, emotions: tuple[str, ...] = EMOTIONS):
        self.emotions = tuple(emotions)
        # (name, Arrow type name, Spark SQL type): the one list both schemas come from.
        self.columns = (
            ("path", "string", "string"),
            ("face", "int32", "int"),
            *((name, "int32", "int") for name in ("x", "y", "w", "h")),
            ("confidence", "float64", "double"),
            ("emotion", "string", "string"),
            *((name, "float64", "double") for name in self.emotions),
            ("error", "string", "string"),
        )
        self.fields = tuple(name for name, _, _ in self.columns)
        self._face_width = len(Face.row_fields(self.emotions))

    @property
    def spark_schema(self) -> str:
        return ", ".join(f"`{name}` {spark}" for name, _, spark in self.columns)

    def arrow_schema(self):
        import pyarrow as pa

        return pa.schema([(name, getattr(pa, arrow)()) for name, arrow, _ in self.columns])

    def _check(self, found: list[Face] | FerlabError) -> None:
        """Never a face under another model's column names."""
        if found and not isinstance(found, FerlabError) and tuple(found[0].probabilities) != self.emotions:
            raise FerlabError(
                f"a face has the probabilities of {', '.join(found[0].probabilities)} and this table's columns are "
                f"{', '.join(self.emotions)}; make the table from the recognizer's emotions."
            )

    def rows_of(self, path: str, found: list[Face] | FerlabError) -> list[list]:
        """The typed rows of one image: its faces, largest first, or one row saying no face or why it was not read."""
        self._check(found)
        if isinstance(found, FerlabError):
            return [[path, None, *[None] * self._face_width, str(found)]]
        if not found:
            return [[path, None, *[None] * self._face_width, None]]
        return [[path, i, *face.values(), None] for i, face in enumerate(found)]

    def csv_rows_of(self, path: str, found: list[Face] | FerlabError) -> list[list]:
        """rows_of as `ferlab detect --csv` writes a face (Face.to_row); empty cells for null."""
        self._check(found)
        if isinstance(found, FerlabError):
            return [[path, "", *[""] * self._face_width, str(found)]]
        if not found:
            return [[path, "", *[""] * self._face_width, ""]]
        return [[path, i, *face.to_row(), ""] for i, face in enumerate(found)]

    def table(self, rows: list[list]):
        """Typed rows -> a pyarrow Table of these columns."""
        import pyarrow as pa

        schema = self.arrow_schema()
        columns = {name: pa.array([row[i] for row in rows], schema.field(name).type) for i, name in enumerate(self.fields)}
        return pa.table(columns, schema=schema)

    def csv_text(self, rows: list[list], header: bool = True) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        if header:
            writer.writerow(self.fields)
        writer.writerows(rows)
        return out.getvalue()


SEVEN = FaceRows()  # the table of a model of FER2013's seven emotions
assert SEVEN.fields[2:-1] == Face.ROW_FIELDS
