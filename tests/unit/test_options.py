"""The recognizer's options, defined once (ferlab.inference.options): the CLI, batch, Spark and the
Python API load a recognizer from the same dataclass, with the same defaults."""

import dataclasses

import numpy as np
import pytest

from ferlab.cli.main import build_parser
from ferlab.errors import FerlabError
from ferlab.inference.detect import DEFAULT_DETECTOR, CropContract
from ferlab.inference.images import DEFAULT_MAX_PIXELS
from ferlab.inference.options import RecognizerOptions
from ferlab.inference.predict import DEFAULT_TTA, FILL_PAD, EmotionRecognizer, classify_in_chunks
from ferlab.inference.sources import DEFAULT_RUNTIME


def test_the_defaults_are_the_librarys_constants_and_the_clis():
    options = RecognizerOptions()
    assert (options.detector, options.max_pixels, options.runtime, options.tta) == (
        DEFAULT_DETECTOR,
        DEFAULT_MAX_PIXELS,
        DEFAULT_RUNTIME,
        DEFAULT_TTA,
    )
    assert options.model is None and options.align is None and options.fill_pad == FILL_PAD and not options.face_crop
    for command in (["detect", "x.jpg"], ["batch", "in", "out.parquet"], ["evaluate", "set"], ["explain", "x.jpg"], ["serve"]):
        args = build_parser().parse_args(command)
        assert RecognizerOptions.from_args(args) == options, command


def test_from_args_takes_what_the_command_names():
    args = build_parser().parse_args(
        ["batch", "in", "out.csv", "--model", "m.h5", "--detector", "haar", "--no-align", "--tta", "none", "--runtime", "keras"]
        + ["--max-pixels", "100", "--face-crop", "--no-filling-faces"]
    )
    assert RecognizerOptions.from_args(args) == RecognizerOptions("m.h5", "haar", False, 100, "keras", "none", True, False)
    assert RecognizerOptions.from_args(args, model="other.h5").model == "other.h5"
    assert RecognizerOptions().fill_pad == FILL_PAD and RecognizerOptions(filling_faces=False).fill_pad == 0
    hash(RecognizerOptions.from_args(args))  # Spark keys its loaded recognizers by the options


def test_load_gives_the_recognizer_the_options_name(tiny_model_path):
    options = RecognizerOptions(str(tiny_model_path), "haar", False, 1234, "keras", "ten-crop", filling_faces=False)
    recognizer = options.load()
    assert isinstance(recognizer, EmotionRecognizer)
    assert (recognizer.detector_name, recognizer.max_pixels, recognizer.tta, recognizer.fill_pad) == ("haar", 1234, "ten-crop", 0)
    assert recognizer.contract == CropContract(EmotionRecognizer.load(tiny_model_path).contract.margin, False)
    assert recognizer.model_source == str(tiny_model_path)
    with pytest.raises(FerlabError, match="unknown test-time augmentation"):
        dataclasses.replace(options, tta="sideways").load()


# ---- the one crop -> classify loop ---------------------------------------------------------


def test_classify_in_chunks_keeps_order_errors_in_place_and_one_call_per_chunk():
    calls = []

    def classify(faces):
        calls.append(len(faces))
        return np.repeat(faces.reshape(len(faces), -1)[:, :1].astype(np.float32), 7, axis=1)  # each face's first pixel

    def crop(item):
        if item == "bad":
            raise FerlabError("bad is not an image.")
        n = int(item)
        return f"kept {item}", np.array([np.full((48, 48), 10 * n + i, np.uint8) for i in range(n)], np.uint8).reshape(n, 48, 48)

    reads = []
    out = list(classify_in_chunks(classify, ["1", "bad", "2", "0", "3"], crop, chunk=3, on_read=lambda: reads.append(1)))
    assert [item for item, _, _ in out] == ["1", "bad", "2", "0", "3"] and len(reads) == 5
    assert calls == [3, 3]  # chunk one: 1 + 2 faces; chunk two: 0 + 3 faces
    (_, kept, p1), (_, error, none), (_, _, p2), (_, _, p0), (_, _, p3) = out
    assert kept == "kept 1" and p1[:, 0].tolist() == [10]
    assert isinstance(error, FerlabError) and none is None
    assert p2[:, 0].tolist() == [20, 21] and p0.shape == (0, 7) and p3[:, 0].tolist() == [30, 31, 32]
    assert list(classify_in_chunks(classify, [], crop)) == [] and calls == [3, 3]
