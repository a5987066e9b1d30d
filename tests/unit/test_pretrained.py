"""Shipping a model into the package, checking it when loaded, the one rule for which model a tool
uses, and importing a shipped model into the registry. A tiny model stands in for the shipped ones
here (tests/unit/test_shipped_models.py checks those themselves)."""

import json
import shutil

import cv2
import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from ferlab.cli.main import main as ferlab_main
from ferlab.contract import EMOTIONS
from ferlab.errors import FerlabError
from ferlab.fileio import sha256_of
from ferlab.inference.predict import EmotionRecognizer
from ferlab.inference.sources import load_model, resolve
from ferlab.lifecycle import pretrained, registry, shipping

PROVENANCE = {
    "architecture": "ferlab_cnn",
    "command": "dvc repro",
    "params": {"seed": "42", "train.epochs": "1"},
    "mlflow_run_id": "0" * 32,
    "git_commit": "abc123",
    "hardware": "a test machine",
    "precision": "float32",
    "kept": "best epoch 1 of 1",
    "data_sha256": "f" * 64,
}


@pytest.fixture(scope="module")
def shipped_root(tiny_model_path, fer_faces, tmp_path_factory):
    """A package's shipped/ folder holding `fast`, made by ship() from a bundle of the tiny model."""
    bundle = tmp_path_factory.mktemp("bundle")
    shutil.copyfile(tiny_model_path, bundle / "model.h5")
    (bundle / "labels.json").write_text(json.dumps({"emotions": [{"id": i, "name": e} for i, e in enumerate(EMOTIONS)]}))
    (bundle / "preprocessing.json").write_text(json.dumps({"face_margin": 0.0, "align": False}))
    root = tmp_path_factory.mktemp("shipped")
    faces, labels = fer_faces
    shipping.ship("fast", bundle, faces, labels, faces, PROVENANCE, root=root, log=lambda _: None)
    return root


@pytest.fixture
def shipped(shipped_root, monkeypatch):
    """The tiny shipped model stands in for the package's own."""
    monkeypatch.setattr(pretrained, "SHIPPED", shipped_root)
    pretrained._verified.clear()
    return shipped_root


@pytest.fixture
def no_registry(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FERLAB_MODEL", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")  # no such file: no registry
    return tmp_path


def test_ship_writes_the_chosen_file_its_checksums_and_a_card_that_its_figures_reproduce(shipped_root, fer_faces):
    folder = shipped_root / "fast"
    card = json.loads((folder / "card.json").read_text())
    assert sorted(card["files"]) == ["MODEL_CARD.md", "labels.json", "model.tflite", "preprocessing.json"]
    assert all(sha256_of(folder / f) == digest for f, digest in card["files"].items())
    assert card["format"] == shipping.choose_format(
        card["formats"]["float32"], {f: {m: {"accuracy": card["formats"][f][m]} for m in ("none", "flip")} for f in shipping.FORMATS}
    )
    assert card["training"]["command"] == "dvc repro" and card["data"]["table_sha256"] == "f" * 64
    faces, labels = fer_faces
    again = shipping.score(shipping.TFLitePredictor(folder / "model.tflite"), faces, labels)
    assert again == card["privatetest"]
    assert card["formats"][card["format"]]["none"] == card["privatetest"]["none"]["accuracy"]
    text = (folder / "MODEL_CARD.md").read_text()
    assert f"{card['privatetest']['flip']['accuracy']:.4f}" in text and "abc123" in text and "`train.epochs`: 1" in text


def test_int8_is_shipped_only_within_0_3_points_of_float32():
    float32 = {"none": 0.6700, "flip": 0.6800}
    measured = {"int8": {"none": {"accuracy": 0.6672}, "flip": {"accuracy": 0.6790}}, "float16": {}}
    assert shipping.choose_format(float32, measured) == "int8"
    measured["int8"]["flip"]["accuracy"] = 0.6765  # 0.35 points below with flip
    assert shipping.choose_format(float32, measured) == "float16"


def test_ship_refuses_an_unknown_name_and_an_incomplete_bundle(tmp_path, fer_faces):
    faces, labels = fer_faces
    with pytest.raises(FerlabError, match="not a shipped model's name"):
        shipping.ship("huge", tmp_path, faces, labels, faces, PROVENANCE, root=tmp_path)
    with pytest.raises(FerlabError, match="has no model.h5"):
        shipping.ship("fast", tmp_path, faces, labels, faces, PROVENANCE, root=tmp_path)


def test_ship_refuses_a_model_of_fewer_emotions(subset_bundle, tmp_path, fer_faces):
    faces, labels = fer_faces
    with pytest.raises(FerlabError, match=r"answers with happy, sad, neutral; a shipped model answers with FER2013's seven"):
        shipping.ship("fast", subset_bundle, faces, labels, faces, PROVENANCE, root=tmp_path)
    assert not list(tmp_path.iterdir())  # nothing written


def test_a_damaged_or_missing_file_is_refused_before_use(shipped_root, tmp_path, monkeypatch):
    root = tmp_path / "shipped"
    shutil.copytree(shipped_root, root)
    monkeypatch.setattr(pretrained, "SHIPPED", root)
    pretrained._verified.clear()
    model = root / "fast" / "model.tflite"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(FerlabError, match=r"model.tflite does not match its SHA-256 in card.json; .*reinstall ferlab"):
        load_model("pretrained:fast")
    (root / "fast" / "labels.json").unlink()
    with pytest.raises(FerlabError, match="pretrained:fast is missing labels.json"):
        load_model("pretrained:fast")


def test_names_that_are_not_shipped(shipped):
    with pytest.raises(FerlabError, match="pretrained:huge is not a pretrained model; ferlab ships pretrained:accurate, pretrained:fast"):
        load_model("pretrained:huge")
    with pytest.raises(FerlabError, match=r"pretrained:accurate is not shipped in this version of ferlab \(shipped: pretrained:fast\)"):
        load_model("pretrained:accurate")
    assert pretrained.available() == ["fast"] and pretrained.default_uri() == "pretrained:fast"


def test_the_rule_step_by_step(shipped, no_registry, tiny_bundle, monkeypatch):
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{no_registry}/mlflow.db"}
    assert (resolve(None, env).source, resolve(None, env).why) == ("pretrained:fast", "pretrained")
    (no_registry / "models" / "bundle").mkdir(parents=True)
    shutil.copyfile(tiny_bundle / "model.tflite", no_registry / "models" / "bundle" / "model.tflite")
    assert (resolve(None, env).source, resolve(None, env).why) == ("models/bundle", "checkout")
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    client = MlflowClient()
    client.create_registered_model("other-model")  # a registry without ferlab's model: not a reason to fail
    assert resolve(None, env).why == "checkout"
    client.create_registered_model("ferlab-emotion")
    version = client.create_model_version("ferlab-emotion", source="file:///nowhere")
    assert resolve(None, env).why == "checkout"  # a version, but none in production
    client.set_registered_model_alias("ferlab-emotion", registry.PRODUCTION, version.version)
    assert (resolve(None, env).source, resolve(None, env).why) == ("models:/ferlab-emotion@production", "registry")
    env["FERLAB_MODEL"] = "pretrained:fast"
    assert (resolve(None, env).source, resolve(None, env).why) == ("pretrained:fast", "$FERLAB_MODEL")
    assert (resolve("elsewhere.h5", env).source, resolve("elsewhere.h5", env).why) == ("elsewhere.h5", "--model")


def test_without_any_model_the_error_says_what_to_do(shipped, no_registry, monkeypatch):
    monkeypatch.setattr(pretrained, "SHIPPED", no_registry / "nothing-shipped")
    with pytest.raises(FerlabError, match=r"^no model: none named .*run `dvc repro` or reinstall ferlab\.$"):
        resolve(None, {"MLFLOW_TRACKING_URI": f"sqlite:///{no_registry}/mlflow.db"})


def test_an_unreachable_registry_is_an_error_not_a_silent_fallback(shipped, no_registry, monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with pytest.raises(FerlabError, match=f"cannot reach the MLflow registry at http://127.0.0.1:{port}"):
        resolve(None, {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"})


def test_a_broken_ferlab_model_names_the_variable(shipped, no_registry, monkeypatch):
    monkeypatch.setenv("FERLAB_MODEL", str(no_registry / "gone.h5"))
    with pytest.raises(FerlabError, match=r"^\$FERLAB_MODEL names a model that cannot be used: no model at .*gone\.h5"):
        EmotionRecognizer.load()


def test_with_nothing_named_the_tools_use_the_shipped_model_and_say_so(shipped, no_registry, fer_faces, capsys):
    faces, _ = fer_faces
    photo = no_registry / "photo.png"
    cv2.imwrite(str(photo), faces[0])
    recognizer = EmotionRecognizer.load()
    assert recognizer.model_source == "pretrained:fast" and len(recognizer.predict(str(photo), face_crop=True)) == 1
    assert ferlab_main(["detect", str(photo), "--json", "--face-crop"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["model"] == "pretrained:fast" and len(result["faces"]) == 1
    assert ferlab_main(["detect", str(photo), "--csv", "--face-crop"]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.endswith(",model") and row.endswith(",pretrained:fast")


def test_models_import_registers_the_shipped_model_and_the_gate_compares_against_it(shipped, no_registry, fer_faces, capsys):
    card = pretrained.card("fast")
    assert ferlab_main(["models", "import", "pretrained:fast"]) == 0
    assert "registered pretrained:fast as ferlab-emotion version 1 (alias candidate" in capsys.readouterr().out
    version = registry.get("ferlab-emotion", "1")
    assert version.metric("test_accuracy") == card["privatetest"]["none"]["accuracy"]
    assert version.tags["source"] == "pretrained:fast" and version.tags["model_sha256"] == card["files"]["model.tflite"]
    registry.promote("ferlab-emotion")
    assert resolve(None).source == "models:/ferlab-emotion@production"
    assert ferlab_main(["models", "list"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[-1] == "pretrained:fast"

    # the registered version holds only the TFLite file: the tools and MLflow's pyfunc both run it
    faces, labels = fer_faces
    classifier, _ = load_model("models:/ferlab-emotion@production")
    shipped_classifier, _ = load_model("pretrained:fast")
    x = faces[:16].astype(np.float32)[..., None] / 255
    np.testing.assert_allclose(classifier(x), shipped_classifier(x), atol=1e-6)
    frame = mlflow.pyfunc.load_model("models:/ferlab-emotion@production").predict(faces[:16].astype(np.float32))
    np.testing.assert_allclose(frame[list(EMOTIONS)].to_numpy(), shipped_classifier(x), atol=1e-5)

    worse = MlflowClient().create_model_version(
        "ferlab-emotion", source="file:///nowhere", tags={"test_accuracy": "0.0100", "test_macro_f1": "0.0100"}
    )
    with pytest.raises(FerlabError, match=f"not promoting version {worse.version}: test_accuracy 0.0100 is below production's"):
        registry.promote("ferlab-emotion", worse.version)


def test_models_import_refuses_what_is_not_a_shipped_model(shipped, no_registry, capsys):
    assert ferlab_main(["models", "import", "models/bundle"]) == 1
    assert "models/bundle is not a pretrained model; import pretrained:fast or pretrained:accurate." in capsys.readouterr().err
    assert ferlab_main(["models", "import", "pretrained:accurate"]) == 1
    assert "is not shipped in this version of ferlab" in capsys.readouterr().err
    assert not (no_registry / "mlflow.db").exists()  # nothing was created for a refused import


def test_the_service_describes_a_shipped_model_by_its_card(shipped, no_registry):
    from ferlab.serve.model_info import default_source, describe

    card = pretrained.card("fast")
    assert default_source() == "pretrained:fast"
    info = describe("pretrained:fast")
    assert (info["name"], info["version"], info["source"]) == ("fast", card["version"], "pretrained:fast")
    assert info["test_metrics"] == {
        "accuracy": card["privatetest"]["none"]["accuracy"],
        "macro_f1": card["privatetest"]["none"]["macro_f1"],
        "ece": card["privatetest"]["flip"]["ece"],
    }
