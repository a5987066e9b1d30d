"""Photos -> faces on Spark: the rows of `ferlab batch` (ferlab.inference.face_rows) as a DataFrame.

    images = spark.read.format("binaryFile").option("pathGlobFilter", "*.jpg").option("recursiveFileLookup", "true").load("photos/")
    faces = score_images(images, model="models/bundle")   # path, face, x, y, w, h, confidence, emotion, a probability per emotion, error
    faces.write.mode("overwrite").parquet("faces.parquet")

Each Python worker of an executor loads the detector and the classifier once (with one thread:
Spark runs one task per core) and keeps them for every partition it scores; the faces of each
Arrow batch of images go through the model together. The model is anything `--model` takes; on
a cluster it must be readable from the executors: a path on shared storage, or a registered model
`models:/<name>@<alias>` with MLFLOW_TRACKING_URI set for them. pyspark is imported only here, and
only when called.

Face crops (48x48 grey, FER2013-style) need no detector: score them with the registered MLflow
model itself, `mlflow.pyfunc.spark_udf` (README, "On Spark").
"""

import warnings
from typing import Iterator

from ferlab.inference.face_rows import FaceRows
from ferlab.inference.options import RecognizerOptions

_loaded: dict[RecognizerOptions, object] = {}  # per Python worker process: the recognisers it has loaded


def _recognizer(options: RecognizerOptions):
    if options not in _loaded:
        _loaded[options] = options.load(threads=1)
    return _loaded[options]


def _scorer(options: RecognizerOptions, table: FaceRows, path_col: str, content_col: str):
    def score(batches: Iterator) -> Iterator:
        recognizer = _recognizer(options)
        for batch in batches:
            keys = [str(k) for k in batch.column(path_col).to_pylist()]
            images = list(zip(keys, batch.column(content_col).to_pylist()))
            rows = []
            for key, (_, _, found) in zip(keys, recognizer.predict_files(images, options.face_crop)):
                rows += table.rows_of(key, found)
            yield from table.table(rows).to_batches()

    return score


def score_images(images, model: str | None = None, path_col: str = "path", content_col: str = "content", **options):
    """A DataFrame of encoded images (`path_col`, binary `content_col`: what Spark's binaryFile
    source gives) -> a DataFrame of faces, one row per face (ferlab.inference.face_rows: a probability column
    for each emotion the model answers with).

    options: detector, align, max_pixels, runtime, tta, face_crop, filling_faces (RecognizerOptions). The
    model is loaded once here first, so a wrong model fails at once with its one sentence."""
    from pathlib import Path

    from ferlab.inference.sources import resolve

    model = resolve(model).source
    if Path(model).exists():
        model = str(Path(model).resolve())  # the executors' working folder is not the driver's
    chosen = RecognizerOptions(model=model, **options)
    table = FaceRows(chosen.load().emotions)
    with warnings.catch_warnings():
        # pyspark's advice about pandas 3 concerns its pandas paths; this one passes Arrow batches
        warnings.simplefilter("ignore", FutureWarning)
        return images.select(path_col, content_col).mapInArrow(_scorer(chosen, table, path_col, content_col), table.spark_schema)
