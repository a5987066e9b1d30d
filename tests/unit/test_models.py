import keras
import pytest

from ferlab.errors import FerlabError
from ferlab.training import models, precision

# The paper's Table 2: layer type, output shape, parameters.
PAPER_TABLE_2 = [
    ("Conv2D", (48, 48, 32), 320),
    ("Conv2D", (46, 46, 64), 18496),
    ("MaxPooling2D", (23, 23, 64), 0),
    ("Dropout", (23, 23, 64), 0),
    ("Conv2D", (21, 21, 128), 73856),
    ("MaxPooling2D", (10, 10, 128), 0),
    ("Dropout", (10, 10, 128), 0),
    ("Conv2D", (8, 8, 256), 295168),
    ("MaxPooling2D", (4, 4, 256), 0),
    ("Dropout", (4, 4, 256), 0),
    ("Flatten", (4096,), 0),
    ("Dense", (512,), 2097664),
    ("Dropout", (512,), 0),
    ("Dense", (7,), 3591),
]


def test_paper_cnn_matches_table_2():
    model = models.build("paper_cnn")
    assert model.count_params() == 2_489_095
    got = [(type(layer).__name__, tuple(layer.output.shape[1:]), layer.count_params()) for layer in model.layers]
    assert got == PAPER_TABLE_2
    assert [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)] == [0.1, 0.1, 0.1, 0.2]


def test_default_model_outputs_seven_probabilities():
    model = models.build("ferlab_cnn")
    assert tuple(model.output.shape) == (None, 7)
    assert model.layers[-1].activation.__name__ == "softmax"


def test_softmax_stays_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        for name in models.ARCHITECTURES:
            model = models.build(name)
            assert model.layers[1].compute_dtype == "bfloat16"
            assert model.layers[-1].compute_dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_unknown_model_name():
    with pytest.raises(FerlabError, match="unknown train.model 'resnet'"):
        models.build("resnet")


def test_an_option_of_another_model_is_named_in_the_error():
    # e.g. switching train.model to paper_cnn while model_options still holds ferlab_cnn's widths
    with pytest.raises(FerlabError, match="widths is not an option of paper_cnn; it takes dropout_conv, dropout_dense"):
        models.build("paper_cnn", widths=[16, 32, 64, 128])


def test_several_unknown_options_are_named_together():
    with pytest.raises(FerlabError, match="crop, widths are not options of paper_cnn; it takes"):
        models.build("paper_cnn", widths=[16, 32, 64, 128], crop=40)


@pytest.mark.parametrize(
    "flags, gpus, expected",
    [
        ({"avx2"}, 0, "float32"),
        ({"avx2", "amx_bf16"}, 0, "mixed_bfloat16"),
        ({"avx512_bf16"}, 0, "mixed_bfloat16"),
        ({"avx2"}, 1, "mixed_float16"),
    ],
)
def test_auto_precision(flags, gpus, expected):
    assert precision.resolve("auto", gpus, flags) == expected


def test_explicit_precision_is_kept_and_checked():
    assert precision.resolve("float32", 1, set()) == "float32"
    with pytest.raises(ValueError):
        precision.resolve("float8", 0, set())


def _averaged_map(model) -> tuple:
    (gap,) = [layer for layer in model.layers if isinstance(layer, keras.layers.GlobalAveragePooling2D)]
    return tuple(gap.input.shape[1:3])


def test_final_pool_off_averages_the_whole_last_map():
    pooled, whole = models.build("ferlab_cnn"), models.build("ferlab_cnn", final_pool=False)
    assert pooled.count_params() == whole.count_params()
    assert _averaged_map(pooled) == (2, 2)  # the 5x5 map of a 44 crop, its last row and column dropped
    assert _averaged_map(whole) == (5, 5)
