"""ferlab.serve.drift and `ferlab monitor`'s options, without Evidently or data (the monitor end to end:
tests/integration/test_monitor.py)."""

import argparse
import sys
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from ferlab.cli.monitor import share, when
from ferlab.errors import FerlabError
from ferlab.serve import drift


def test_a_missing_evidently_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "evidently", None)  # `import evidently` raises ImportError
    with pytest.raises(
        FerlabError,
        match=r'^ferlab monitor needs the Evidently drift library; install it with `pip install -c constraints.txt "ferlab\[monitor\]"`\.$',
    ):
        drift.import_evidently()


def test_the_auc_noise_floor_shrinks_with_the_window():
    floors = [drift.auc_noise(n, 3589) for n in (50, 300, 3000)]
    assert 0.5 < floors[2] < floors[1] < floors[0] < 0.7
    assert max(drift.EMBEDDING_AUC, floors[2]) == drift.EMBEDDING_AUC  # a large window keeps Evidently's 0.55


def test_windows_are_times_or_durations_ago():
    assert abs(when("24h") - (datetime.now(timezone.utc) - timedelta(hours=24))) < timedelta(seconds=5)
    assert abs(when("7d") - (datetime.now(timezone.utc) - timedelta(days=7))) < timedelta(seconds=5)
    assert when("2026-12-07T09:00") == datetime(2026, 12, 7, 9, tzinfo=timezone.utc)  # no zone: UTC
    assert when("2026-12-07T09:00+01:00") == datetime(2026, 12, 7, 8, tzinfo=timezone.utc)
    with pytest.raises(argparse.ArgumentTypeError, match="neither an ISO 8601 time"):
        when("yesterday")
    assert share("0.3") == 0.3
    for bad in ("0", "1.5", "-1"):
        with pytest.raises(argparse.ArgumentTypeError):
            share(bad)


def test_a_summary_becomes_a_row_of_the_frame_and_a_missing_embedding_is_nan():
    row = {
        "time": "2026-12-07T09:00:00+00:00",
        "model": "v",
        "emotion": "happy",
        "top_probability": 0.9,
        "probabilities": {"angry": 0.1, "disgust": 0.0, "fear": 0.0, "happy": 0.9, "sad": 0.0, "surprise": 0.0, "neutral": 0.0},
        "face_size": 100,
        "brightness": 120.0,
        "sharpness": 300.0,
        "embedding": None,
    }
    frame = drift.frame([row, row | {"embedding": [1.0] * 32}])
    assert list(frame["p_happy"]) == [0.9, 0.9] and list(frame["emotion"]) == ["happy", "happy"]
    assert frame["embedding_0"].isna().tolist() == [True, False]


def test_an_adapted_models_emotions_are_its_columns_and_another_models_reference_is_refused():
    from ferlab.inference.face_summary import summarize

    crops = np.full((60, 48, 48), 100, np.uint8)
    three = ("happy", "sad", "neutral")
    rows = summarize([(0, 0, 48, 48)] * 60, crops, np.tile(np.float32([0.2, 0.7, 0.1]), (60, 1)), "adapted", emotions=three)
    assert list(rows[0]["probabilities"]) == list(three) and rows[0]["emotion"] == "sad"
    assert list(drift.frame(rows, three).columns[:3]) == ["p_happy", "p_sad", "p_neutral"]
    seven = summarize([(0, 0, 48, 48)] * 60, crops, np.full((60, 7), 1 / 7, np.float32), "fast")
    with pytest.raises(
        FerlabError, match=r"^the window's faces were classified into happy, sad, neutral, the reference's into angry, .*pass --model"
    ):
        drift.compare(rows, seven)
    with pytest.raises(ValueError, match="3 probabilities per face for the 7 emotions"):
        summarize([(0, 0, 48, 48)], crops[:1], np.float32([[0.2, 0.7, 0.1]]), "adapted")
