"""The pretrained models in the package: their files match their cards, their cards state what the
issue asks of them, and their PrivateTest figures come back when re-scored from FER2013 itself."""

import json

import numpy as np
import pytest

from ferlab.contract import EMOTIONS, TEST_SPLIT
from ferlab.lifecycle import pretrained, shipping

SHIPPED = pretrained.available()
MAX_MODEL_BYTES = 10 * 1024 * 1024


def test_ferlab_ships_at_least_the_fast_model():
    assert "fast" in SHIPPED, f"no pretrained:fast in {pretrained.SHIPPED}; ship one with `ferlab models ship fast`"


@pytest.mark.parametrize("name", SHIPPED)
def test_each_file_matches_its_card_and_the_card_says_where_it_came_from(name):
    pretrained._verified.clear()
    folder = pretrained.verified_folder(pretrained.PREFIX + name)  # every SHA-256 checked
    card = json.loads((folder / pretrained.CARD).read_text())
    assert sorted(p.name for p in folder.iterdir()) == sorted([*card["files"], pretrained.CARD])
    assert sum(p.stat().st_size for p in folder.iterdir()) <= MAX_MODEL_BYTES  # the model's files together
    assert (folder / "model.h5").is_file() == card["keras_h5"]
    assert card["format"] in shipping.FORMATS and card["emotions"] == list(EMOTIONS)
    assert json.loads((folder / "labels.json").read_text())["emotions"] == [{"id": i, "name": e} for i, e in enumerate(EMOTIONS)]
    training = card["training"]
    assert training["command"].startswith(("dvc repro", "dvc exp run")) and training["params"]["train.model"] == card["architecture"]
    assert len(training["mlflow_run_id"]) == 32 and len(card["data"]["table_sha256"]) == 64
    assert len(training["git_commit"].removesuffix("-dirty")) == 40 and training["hardware"]
    float32, kept = card["formats"]["float32"], card["formats"][card["format"]]
    assert kept == {
        "none": card["privatetest"]["none"]["accuracy"],
        "flip": card["privatetest"]["flip"]["accuracy"],
        "bytes": kept["bytes"],
    }
    assert card["format"] == shipping.choose_format(
        float32, {f: {m: {"accuracy": card["formats"][f][m]} for m in ("none", "flip")} for f in shipping.FORMATS}
    )
    assert abs(float32["none"] - kept["none"]) <= shipping.MAX_DROP + 1e-9 or card["format"] == "float16"


def test_the_accurate_model_meets_its_floor_where_it_is_shipped():
    if "accurate" not in SHIPPED:
        pytest.skip("this version ships no pretrained:accurate")
    test = pretrained.card("accurate")["privatetest"]
    assert test["none"]["accuracy"] >= 0.710 and test["flip"]["accuracy"] >= 0.725
    assert min(c["recall"] for c in test["flip"]["per_class"].values()) >= 0.50 and test["flip"]["ece"] <= 0.03


@pytest.fixture(scope="module")
def privatetest(archive):
    from ferlab.data.readers import read_image_archive
    from ferlab.data.table import images_of

    table = read_image_archive(archive).table
    test = table[table["split"] == TEST_SPLIT]
    return images_of(test), test["label"].to_numpy().astype(int)


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_re_scored_on_privatetest_the_model_gives_its_cards_figures(name, privatetest):
    faces, labels = privatetest
    assert len(labels) == 3589
    card = pretrained.card(name)
    again = shipping.score(shipping.TFLitePredictor(pretrained.verified_folder(pretrained.PREFIX + name) / "model.tflite"), faces, labels)
    for mode in shipping.TTA_SCORED:
        for key in ("accuracy", "macro_f1", "ece"):
            assert abs(again[mode][key] - card["privatetest"][mode][key]) <= 0.001, (mode, key)
    recalls = [card["privatetest"]["flip"]["per_class"][e]["recall"] for e in EMOTIONS]
    np.testing.assert_allclose([again["flip"]["per_class"][e]["recall"] for e in EMOTIONS], recalls, atol=0.001)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in SHIPPED if pretrained.card(n).get("keras_h5")])
def test_the_keras_model_shipped_beside_it_is_the_float32_model_the_card_names(name, privatetest):
    from ferlab.training.evaluate import score_split
    from ferlab.training.model_io import load_h5

    faces, labels = privatetest
    model = load_h5(pretrained.verified_folder(pretrained.PREFIX + name) / "model.h5")
    scores = score_split(model, faces, labels, ("none", "flip")).scores
    for mode in ("none", "flip"):
        assert abs(scores[mode]["accuracy"] - pretrained.card(name)["formats"]["float32"][mode]) <= 0.001, mode
