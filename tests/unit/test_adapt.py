"""ferlab adapt: the split, the checks on the user's set, the fine-tuning pieces, the bundle and the registry."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from ferlab.contract import EMOTIONS
from ferlab.data.split import stratified_split
from ferlab.errors import FerlabError
from ferlab.inference import adapt as adapt_mod
from ferlab.inference.adapt import adapt, parse_emotions
from ferlab.lifecycle import adapted, registry
from ferlab.training.compare import compare

# ---- the split --------------------------------------------------------------------------------


def test_split_is_stratified_and_repeatable():
    labels = np.array(["happy"] * 50 + ["sad"] * 30 + ["fear"] * 11)
    val = stratified_split(labels, 0.2, seed=3)
    assert [int(val[labels == c].sum()) for c in ("happy", "sad", "fear")] == [10, 6, 2]
    assert np.array_equal(val, stratified_split(labels, 0.2, seed=3))
    assert not np.array_equal(val, stratified_split(labels, 0.2, seed=4))
    with pytest.raises(ValueError, match="between 0 and 1"):
        stratified_split(labels, 1.0)


def test_split_by_group_keeps_each_person_on_one_side_and_near_the_targets():
    rng = np.random.default_rng(0)
    labels, groups = [], []
    for person in range(40):  # 40 people, 3 to 12 frames each, of two or three emotions
        for _ in range(rng.integers(3, 13)):
            labels.append(rng.choice(["happy", "sad", "neutral"], p=[0.5, 0.3, 0.2]))
            groups.append(f"p{person}")
    labels, groups = np.array(labels), np.array(groups)
    val = stratified_split(labels, 0.25, seed=0, groups=groups)
    for person in set(groups):
        assert len(set(val[groups == person])) == 1, f"{person} is on both sides"
    for c in ("happy", "sad", "neutral"):
        share = val[labels == c].mean()
        assert 0.15 < share < 0.35, (c, share)


def test_a_csv_group_column_is_read_beside_the_labels(tmp_path):
    from ferlab.inference import labelled_set

    table = tmp_path / "faces.csv"
    table.write_text("path,label,group\na.png,happy,ann\nb.png,Sadness,ann\nc.png,contempt,bob\nd.png,neutral,\n")
    found = labelled_set.read(str(table))
    assert [e for _, e in found.items] == ["happy", "sad", "neutral"] and found.groups == ["ann", "ann", ""]
    (tmp_path / "plain.csv").write_text("path,label\na.png,happy\n")
    assert labelled_set.read(str(tmp_path / "plain.csv")).groups is None


# ---- the checks on the user's set -------------------------------------------------------------


def write_faces(root: Path, faces, labels, names=None) -> Path:
    """FER2013 faces as PNG files in emotion folders (a user's set of face crops)."""
    for i, (face, label) in enumerate(zip(faces, labels)):
        folder = root / (names[label] if names else EMOTIONS[label])
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{i}.png"), face)
    return root


@pytest.fixture
def grey_set(tmp_path):
    """Grey 48x48 images in emotion folders, as many of each as asked."""

    def make(root: Path, counts: dict[str, int]) -> Path:
        for emotion, n in counts.items():
            (root / emotion).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                grey = np.full((48, 48), 40 + (8 * i) % 200, np.uint8)
                grey[0, 0] = 30 * EMOTIONS.index(emotion)  # every file differs (copies of one file stay on one side of the split)
                cv2.imwrite(str(root / emotion / f"{i}.png"), grey)
        return root

    return make


def test_emotions_are_parsed_in_the_users_order():
    assert parse_emotions("Happiness, sad,neutral", EMOTIONS) == ("happy", "sad", "neutral")
    assert parse_emotions(None, ("happy", "sad")) == ("happy", "sad")
    for text, message in (
        ("happy,contempt", "'contempt' is not one of FER2013's emotions"),
        ("happy,happiness", "names happy twice"),
        ("happy", "at least two emotions"),
        ("happy,fear", "the model has no fear output"),
    ):
        with pytest.raises(FerlabError, match=message):
            parse_emotions(text, ("happy", "sad", "neutral"))


def test_bad_input_is_one_counted_sentence_and_nothing_is_written(tmp_path, grey_set, tiny_model_path, tiny_bundle, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "out"

    def refused(match: str, data, **kwargs):
        with pytest.raises(FerlabError, match=match):
            adapt(str(data), model=str(tiny_model_path), out=out, face_crop=True, print_fn=lambda _: None, progress=False, **kwargs)
        assert not out.exists() and not (tmp_path / "mlflow.db").exists()

    data = grey_set(tmp_path / "data", {"happy": 12, "sad": 12, "neutral": 12, "angry": 3})
    (tmp_path / "data" / "contempt").mkdir()
    cv2.imwrite(str(tmp_path / "data" / "contempt" / "x.png"), np.zeros((48, 48), np.uint8))
    refused(
        r"has 4 image\(s\) labelled outside the emotions to adapt to \(happy, sad, neutral\): 3 angry, 1 contempt",
        data,
        emotions="happy,sad,neutral",
    )
    # with the seven: too few of everything, each emotion named with what it has and what it needs
    refused(
        r"too few faces: angry \(2 to train on, 1 to validate on\), disgust \(0 to train on, 0 to validate on\)", data, skip_unusable=True
    )
    refused(
        r"needs at least 10 faces to train on and 5 to validate on for each emotion \(about 25 per emotion with --val-fraction 0.2\)",
        data,
        skip_unusable=True,
    )
    val = grey_set(tmp_path / "val", {"happy": 5, "fear": 5})
    refused("VAL .* has faces of fear, which DATA .* lacks", data, val=str(val), emotions="happy,sad,fear", skip_unusable=True)
    two = grey_set(tmp_path / "two", {"happy": 12, "sad": 12})
    (two / "sad" / "broken.png").write_bytes(b"not an image")
    refused(r"DATA .*: 1 image\(s\) cannot be used: 1 cannot be read .*--skip-unusable to adapt on the others", two, emotions="happy,sad")
    tflite_only = tmp_path / "tflite_only"  # as pretrained:fast ships: no .h5 to fine-tune
    tflite_only.mkdir()
    (tflite_only / "model.tflite").write_bytes((tiny_bundle / "model.tflite").read_bytes())
    with pytest.raises(FerlabError, match="holds only a TFLite model, which cannot be fine-tuned"):
        adapt(str(two), model=str(tflite_only), out=out, face_crop=True, print_fn=lambda _: None, progress=False)


def test_photos_without_a_face_are_counted(tmp_path, grey_set, tiny_model_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = grey_set(tmp_path / "data", {"happy": 3, "sad": 3})
    with pytest.raises(FerlabError, match=r"6 image\(s\) cannot be used: 6 hold no face the detector finds \(e.g. .*0.png: no face found"):
        adapt(str(data), model=str(tiny_model_path), out=tmp_path / "out", print_fn=lambda _: None, progress=False)
    assert not (tmp_path / "out").exists()


# ---- the pieces -------------------------------------------------------------------------------


def test_compare_intervals_hold_the_figures_and_the_paired_gain():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    before = np.eye(3)[np.where(rng.random(300) < 0.6, y, rng.integers(0, 3, 300))]
    after = np.eye(3)[np.where(rng.random(300) < 0.8, y, rng.integers(0, 3, 300))]
    result = compare(y, before, after, ("happy", "sad", "neutral"), rounds=400)
    for side in ("before", "after"):
        low, high = result[side]["accuracy_ci"]
        assert low < result[side]["accuracy"] < high and high - low < 0.15
        assert result[side]["accuracy"] == pytest.approx(np.trace(np.array(result[side]["confusion_matrix"])) / 300, abs=1e-4)
    from sklearn.metrics import f1_score

    assert result["after"]["macro_f1"] == pytest.approx(f1_score(y, after.argmax(1), average="macro"), abs=1e-4)
    assert result["gain"]["accuracy_ci"][0] > 0  # a clear gain: the paired interval stays above 0


def test_a_subset_head_answers_as_the_parent_renormalised(tiny_model_path, fer_faces):
    from ferlab.training.evaluate import predict_proba
    from ferlab.training.finetune import with_emotions
    from ferlab.training.model_io import load_h5

    parent = load_h5(tiny_model_path)
    faces = fer_faces[0][:20]
    ids = [3, 4, 6]  # happy, sad, neutral
    full = predict_proba(parent, faces)[:, ids]
    cut = with_emotions(parent, ids)
    assert cut.output_shape[-1] == 3
    np.testing.assert_allclose(predict_proba(cut, faces), full / full.sum(1, keepdims=True), atol=1e-5)
    np.testing.assert_allclose(predict_proba(parent, faces).sum(1), 1, atol=1e-5)  # the parent is untouched


def test_renormalise_moves_the_statistics_to_the_new_faces(tiny_model_path, fer_faces):
    import keras

    from ferlab.training.finetune import renormalise, with_emotions
    from ferlab.training.model_io import load_h5

    model = with_emotions(load_h5(tiny_model_path), list(range(7)))
    first = next(layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization))
    bright = np.clip(fer_faces[0].astype(int) + 80, 0, 255).astype(np.uint8)
    before = first.moving_mean.numpy().copy()
    renormalise(model, bright, batch_size=64)
    after_bright = first.moving_mean.numpy().copy()
    renormalise(model, fer_faces[0], batch_size=64)
    assert not np.allclose(before, after_bright) and first.momentum == pytest.approx(0.99)
    assert not np.allclose(after_bright, first.moving_mean.numpy())


def test_fine_tuning_is_repeatable_and_leaves_the_parent_alone(tiny_model_path, fer_faces):
    from ferlab.training.finetune import Recipe, fine_tune, with_emotions
    from ferlab.training.model_io import load_h5

    faces, labels = fer_faces[0][:96], fer_faces[1][:96]
    parent = with_emotions(load_h5(tiny_model_path), list(range(7)))
    kept = [w.copy() for w in parent.get_weights()]
    recipe = Recipe(epochs=1, batch_size=32)
    first, second = (fine_tune(parent, faces, labels, recipe, print_fn=None).model for _ in range(2))
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert all(np.array_equal(a, b) for a, b in zip(kept, parent.get_weights()))
    assert not all(np.array_equal(a, b) for a, b in zip(kept, first.get_weights()))
    assert not first.compiled  # nothing of the optimiser goes into the saved model


# ---- end to end: a small real set, a tiny model, the registry ------------------------------------


@pytest.fixture
def registry_uri(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # MLflow's artifacts (./mlruns) and params: this folder's
    mlflow.set_tracking_uri(uri)
    return uri


def test_adapt_to_three_emotions_writes_a_bundle_the_tools_load_and_registers_a_candidate(
    tmp_path, registry_uri, fer_faces, tiny_bundle, small_zip
):
    from ferlab.inference.predict import EmotionRecognizer
    from ferlab.training.finetune import Recipe

    faces, labels = fer_faces
    keep = np.isin(labels, [3, 4, 6])  # 45 faces each of happy, sad, neutral
    data = write_faces(tmp_path / "my faces", faces[keep], labels[keep])
    lines = []
    result = adapt(
        str(data),
        model=str(tiny_bundle),
        emotions="happy,sad,neutral",
        recipe=Recipe(epochs=1),
        out=tmp_path / "adapted",
        face_crop=True,
        fer2013=str(small_zip),
        log=True,
        name="emo",
        print_fn=lines.append,
        progress=False,
    )
    bundle, report = result.bundle, result.report
    assert {p.name for p in bundle.iterdir()} >= {
        "model.h5",
        "model.tflite",
        "labels.json",
        "preprocessing.json",
        "MODEL_CARD.md",
        "adapt.json",
        "split.csv",
        "held_out.csv",
        *adapted.FIGURES,
    }
    assert len((bundle / "held_out.csv").read_text().splitlines()) == 1 + 27
    assert [e["name"] for e in json.loads((bundle / "labels.json").read_text())["emotions"]] == ["happy", "sad", "neutral"]
    import h5py

    with h5py.File(bundle / "model.h5") as saved:
        assert list(saved) == ["model_weights"]  # no optimiser state
    assert report["dataset"]["faces"] == {"train": 108, "val": 27} and report["epochs"] == 1
    val = report["validation"]
    assert val["faces"] == 27 and set(val["after"]["per_class"]) == {"happy", "sad", "neutral"}
    for side in ("before", "after"):
        matrix = np.array(val[side]["confusion_matrix"])
        assert matrix.shape == (3, 3) and val[side]["accuracy"] == pytest.approx(np.trace(matrix) / 27, abs=1e-4)
    assert report["privatetest"]["faces"] == 12 and report["privatetest"]["emotions"] == "happy,sad,neutral"  # 4 of each
    assert any(line.startswith("epoch 1/1") for line in lines)

    for runtime in ("tflite", "keras"):  # the adapted bundle as every tool loads it
        recognizer = EmotionRecognizer.load(str(bundle), runtime=runtime, tta="flip")
        (face,) = recognizer.predict(faces[keep][0], face_crop=True)
        assert list(face.probabilities) == ["happy", "sad", "neutral"] and face.emotion in face.probabilities
        assert len(face.to_row()) == 6 + 3

    client = MlflowClient()
    version = client.get_model_version("emo", result.version.version)
    assert client.get_model_version_by_alias("emo", "candidate").version == version.version
    tags = version.tags
    assert tags["adapt.parent"] == str(tiny_bundle) and tags["adapt.data_sha256"] == report["dataset"]["sha256"]
    assert tags["adapt.train_faces"] == "108" and tags["adapt.val_faces"] == "27" and tags["adapt.emotions"] == "happy,sad,neutral"
    assert (
        float(tags["adapt.val_accuracy_after"]) == val["after"]["accuracy"] and "test_accuracy" not in tags
    )  # three emotions: not comparable
    run = client.get_run(result.run_id)
    (dataset,) = run.inputs.dataset_inputs
    assert dataset.dataset.name == "my faces" and dataset.dataset.digest == report["dataset"]["sha256"][:32]
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "adapt")}
    assert {f"adapt/{f}" for f in adapted.FIGURES} <= artifacts
    stored = [p for p in Path(tmp_path / "mlruns").rglob("*") if p.is_file()] if (tmp_path / "mlruns").exists() else []
    stored += [p for p in Path(tmp_path).glob("mlartifacts/**/*") if p.is_file()]
    assert stored and not [p for p in stored if p.parent.name in ("happy", "sad", "neutral") or p.name == "0.png"]  # no user image

    pyfunc = mlflow.pyfunc.load_model(f"models:/emo/{version.version}")  # the registered model answers with its three
    frame = pyfunc.predict(faces[keep][:2].astype(np.float32))
    assert list(frame.columns) == ["happy", "sad", "neutral", "emotion"]

    # the gate: an adapted version goes to production only over the version it was compared with
    with pytest.raises(FerlabError, match=r"was compared on my faces's validation part \(27 faces\) with .*, not with production"):
        client.set_registered_model_alias("emo", "production", client.create_model_version("emo", source="file:///x").version)
        registry.promote("emo", version.version)


# ---- the gate and registration -------------------------------------------------------------------


def add_version(client, tags, alias=None) -> str:
    if not client.search_registered_models("name='emo'"):
        client.create_registered_model("emo")
    version = str(client.create_model_version("emo", source="file:///nowhere", tags=tags).version)
    if alias:
        client.set_registered_model_alias("emo", alias, version)
    return version


def adapted_tags(parent: str, before: float, after: float, f1_before: float = 0.5, f1_after: float = 0.5) -> dict:
    return {
        "adapt.parent_version": parent,
        "adapt.dataset": "my_faces",
        "adapt.val_faces": "200",
        "adapt.val_accuracy_before": str(before),
        "adapt.val_accuracy_after": str(after),
        "adapt.val_macro_f1_before": str(f1_before),
        "adapt.val_macro_f1_after": str(f1_after),
    }


def test_promote_gates_an_adapted_candidate_on_the_users_faces(registry_uri):
    client = MlflowClient()
    production = add_version(client, {"test_accuracy": "0.68", "test_macro_f1": "0.66"}, alias="production")
    worse = add_version(client, adapted_tags(production, 0.60, 0.60), alias="candidate")
    with pytest.raises(
        FerlabError, match=r"its accuracy on my_faces's validation part \(200 faces\) is 0.6000, which does not beat production's"
    ):
        registry.promote("emo")
    lower_f1 = add_version(client, adapted_tags(production, 0.60, 0.65, 0.55, 0.50))
    with pytest.raises(FerlabError, match="its macro-F1 on .* is 0.5000, below production's 0.5500"):
        registry.promote("emo", lower_f1)
    better = add_version(client, adapted_tags(production, 0.60, 0.66, 0.55, 0.58))
    chosen, previous = registry.promote("emo", better)  # PrivateTest figures do not enter: it was judged on the user's faces
    assert (chosen.version, previous.version) == (better, production)
    # a plain candidate may not replace an adapted production unseen
    plain = add_version(client, {"test_accuracy": "0.70", "test_macro_f1": "0.69"})
    with pytest.raises(
        FerlabError, match=f"production \\(version {better}\\) was adapted to my_faces and version {plain} was never scored on it"
    ):
        registry.promote("emo", plain)
    registry.promote("emo", plain, force=True, reason="retrained on more data")
    assert worse  # kept as it was: never promoted


def test_an_interrupted_registration_leaves_no_version(registry_uri, monkeypatch):
    client = MlflowClient()
    client.create_registered_model("emo")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", interrupted)
    with pytest.raises(KeyboardInterrupt):
        registry.register("emo", "file:///nowhere", tags={"a": "b"})
    assert client.search_model_versions("name='emo'") == []


def test_ctrl_c_while_adapting_leaves_no_bundle_and_no_version(tmp_path, registry_uri, grey_set, tiny_model_path, monkeypatch):
    from ferlab.training import finetune

    data = grey_set(tmp_path / "data", {"happy": 25, "sad": 25})
    kwargs = dict(model=str(tiny_model_path), emotions="happy,sad", face_crop=True, privatetest=False, log=True, name="emo")
    kwargs |= dict(out=tmp_path / "out", print_fn=lambda _: None, progress=False)

    def interrupted(*args, **kw):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:  # while training
        patch.setattr(finetune, "fine_tune", interrupted)
        with pytest.raises(KeyboardInterrupt):
            adapt(str(data), **kwargs)
    assert not (tmp_path / "out").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    with monkeypatch.context() as patch:  # while registering, after the model was logged
        patch.setattr(registry, "register", interrupted)
        with pytest.raises(KeyboardInterrupt):
            adapt(str(data), recipe=finetune.Recipe(epochs=1), **kwargs)
    client = MlflowClient()
    assert not client.search_registered_models("name='emo'") or not client.search_model_versions("name='emo'")
    (run,) = client.search_runs([client.get_experiment_by_name(adapted.EXPERIMENT).experiment_id])
    assert run.info.status == "KILLED"


def test_ctrl_c_waits_for_the_registration():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with registry.interrupts_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            done.append("registered")
    assert done == ["registered"]


def test_the_cli_says_it_in_one_sentence(tmp_path, grey_set, tiny_model_path, monkeypatch, capsys):
    from ferlab.cli.main import main

    monkeypatch.chdir(tmp_path)
    data = grey_set(tmp_path / "data", {"happy": 4, "sad": 4})
    assert main(["adapt", str(data), "--model", str(tiny_model_path), "--face-crop", "--emotions", "happy,sad", "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: too few faces: happy (3 to train on, 1 to validate on)")
    assert not (tmp_path / "data_adapted").exists()


def test_tables_of_a_model_of_fewer_emotions_have_its_columns_and_refuse_another_models_faces():
    from ferlab.inference.face_rows import SEVEN, FaceRows
    from ferlab.inference.predict import Face

    three = FaceRows(("happy", "sad", "neutral"))
    assert three.fields[-4:] == ("happy", "sad", "neutral", "error") and "angry" not in three.fields
    assert three.spark_schema.endswith("`happy` double, `sad` double, `neutral` double, `error` string")
    face = Face((0, 0, 48, 48), None, {"happy": 0.5, "sad": 0.3, "neutral": 0.2})
    (row,) = three.rows_of("a.png", [face])
    assert len(row) == len(three.fields) and row[-4:] == [0.5, 0.3, 0.2, None]
    assert three.table(three.rows_of("b.png", []) + [row]).column("sad").to_pylist() == [None, 0.3]
    assert three.csv_text(three.csv_rows_of("a.png", [face])).splitlines()[1].endswith("happy,0.5000,0.3000,0.2000,")
    for rows in (SEVEN.rows_of, SEVEN.csv_rows_of):  # never a face under another model's column names
        with pytest.raises(FerlabError, match="a face has the probabilities of happy, sad, neutral and this table's columns are angry"):
            rows("a.png", [face])
    seven = Face((0, 0, 48, 48), None, {e: 1 / 7 for e in EMOTIONS})
    with pytest.raises(FerlabError, match="this table's columns are happy, sad, neutral"):
        three.rows_of("a.png", [seven])


def test_adapt_runs_on_tensorflow_whatever_keras_backend_says(tmp_path):
    pytest.importorskip("jax")
    script = """
import sys
from ferlab.errors import FerlabError
from ferlab.inference.adapt import adapt
if sys.argv[1] == "keras-first":
    import keras
    print(keras.backend.backend())
try:
    adapt("no such folder")
except FerlabError as err:
    print(err)
import keras
print(keras.backend.backend())
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")} | {"KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
    outputs = [
        subprocess.run([sys.executable, "-c", script, case], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
        for case in ("adapt-first", "keras-first")
    ]
    first, second = (out.stdout.strip().splitlines() for out in outputs)
    assert first[-1] == "tensorflow" and "no such folder" in first[0], outputs[0].stderr
    assert second[0] == "jax" and second[1].startswith(
        "ferlab adapt fine-tunes on TensorFlow but Keras already runs on jax in this process"
    ), outputs[1].stderr


def test_adapt_module_minimums_are_what_the_messages_say():
    assert (adapt_mod.MIN_TRAIN_FACES, adapt_mod.MIN_VAL_FACES) == (10, 5)
