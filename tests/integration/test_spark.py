"""The model on Spark, in local mode with two cores: photos -> faces with ferlab's scorer, and
face crops with the registered MLflow model through `mlflow.pyfunc.spark_udf`.

Needs a Java runtime (`apt-get install -y --no-install-recommends default-jre-headless`) and the
`pyspark` package (in the dev extra).
"""

import os
import shutil
import sys

import numpy as np
import pytest

from ferlab.contract import EMOTIONS
from ferlab.errors import FerlabError
from ferlab.inference.face_rows import SEVEN
from integration.photo_set import FACES, NO_FACE, UNREADABLE, write_photos

INSTALL = '`apt-get install -y --no-install-recommends default-jre-headless` (Debian/Ubuntu) and `pip install -e ".[dev]"` (pyspark)'
if not shutil.which("java") and not os.environ.get("JAVA_HOME"):
    pytest.skip(f"needs a Java runtime for Spark: {INSTALL}", allow_module_level=True)
pytest.importorskip("pyspark", reason=f"needs pyspark: {INSTALL}")


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    os.environ["PYSPARK_PYTHON"] = sys.executable  # the executors' Python: this one, with ferlab
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    session = (
        SparkSession.builder.master("local[2]")
        .appName("ferlab-test")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def test_photos_give_the_rows_of_ferlab_batch(spark, tmp_path, tiny_bundle):
    from ferlab.inference.predict import EmotionRecognizer
    from ferlab.inference.spark import score_images

    photos = write_photos(tmp_path / "photos")
    images = spark.read.format("binaryFile").load(str(photos)).repartition(2)
    faces = score_images(images, model=str(tiny_bundle))
    assert tuple(faces.columns) == SEVEN.fields
    rows = {}
    for row in faces.collect():
        rows.setdefault(os.path.basename(row["path"]), []).append(row.asDict())
    unreadable = [name for name in UNREADABLE if (photos / name).stat().st_size]  # Spark's binaryFile source lists no empty file
    assert sorted(rows) == sorted([*FACES, *unreadable, NO_FACE]) and all(len(r) == 1 for r in rows.values())

    recognizer = EmotionRecognizer.load(tiny_bundle)
    for name in FACES:
        ((face,),) = [recognizer.predict(photos / name)]
        ((row,),) = [rows[name]]
        assert row["face"] == 0 and row["error"] is None and (row["x"], row["y"], row["w"], row["h"]) == face.box
        assert [row[e] for e in EMOTIONS] == pytest.approx([face.probabilities[e] for e in EMOTIONS], abs=1e-6)
    assert rows[NO_FACE][0]["face"] is None and rows[NO_FACE][0]["error"] is None
    for name in unreadable:
        assert rows[name][0]["face"] is None and name in rows[name][0]["error"]


def test_a_model_of_fewer_emotions_gives_its_own_columns(spark, tmp_path, subset_bundle):
    from ferlab.inference.predict import EmotionRecognizer
    from ferlab.inference.spark import score_images

    photos = write_photos(tmp_path / "photos")
    images = spark.read.format("binaryFile").load(str(photos))
    faces = score_images(images, model=str(subset_bundle))
    assert tuple(faces.columns)[-4:] == ("happy", "sad", "neutral", "error") and "angry" not in faces.columns
    rows = {os.path.basename(r["path"]): r.asDict() for r in faces.collect() if r["face"] == 0}
    recognizer = EmotionRecognizer.load(subset_bundle)
    for name in FACES:
        (face,) = recognizer.predict(photos / name)
        assert [rows[name][e] for e in ("happy", "sad", "neutral")] == pytest.approx(list(face.probabilities.values()), abs=1e-6)
        assert rows[name]["emotion"] == face.emotion


def test_a_wrong_model_is_one_sentence_before_any_job(spark, tmp_path):
    from ferlab.inference.spark import score_images

    images = spark.read.format("binaryFile").load(str(write_photos(tmp_path / "photos")))
    with pytest.raises(FerlabError, match=r"^no model at .*missing; pass --model pretrained:fast"):
        score_images(images, model=str(tmp_path / "missing"))


def test_face_crops_with_the_registered_model_through_spark_udf(spark, tmp_path, monkeypatch, tiny_model_path, fer_faces):
    import mlflow

    from ferlab.lifecycle import pyfunc

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("spark-test", artifact_location=(tmp_path / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment):
        info = pyfunc.log_model("emotion_model", tiny_model_path)  # as the train and package stages log it
    mlflow.register_model(info.model_uri, "ferlab-emotion")

    faces = fer_faces[0][:24]
    rows = [(i, face.astype(np.float32).ravel().tolist()) for i, face in enumerate(faces)]  # 2,304 grey levels, 0..255
    table = spark.createDataFrame(rows, "id int, pixels array<float>")
    result_type = ", ".join(f"{e} double" for e in EMOTIONS) + ", emotion string"
    predict = mlflow.pyfunc.spark_udf(spark, "models:/ferlab-emotion/1", result_type=f"struct<{result_type}>", env_manager="local")
    scored = table.coalesce(1).withColumn("p", predict("pixels")).select("id", "p.*").orderBy("id").toPandas()

    expected = mlflow.pyfunc.load_model("models:/ferlab-emotion/1").predict(faces.astype(np.float32))
    assert list(scored["emotion"]) == list(expected["emotion"])
    assert np.allclose(scored[list(EMOTIONS)].to_numpy(), expected[list(EMOTIONS)].to_numpy(), atol=1e-5)
