"""The one list of emotions: names, ids and the FER2013 folder names."""

# Ids are those of the original challenge CSV (fer2013.csv, column `emotion`).
EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
NUM_CLASSES = len(EMOTIONS)
EMOTION_TO_ID: dict[str, int] = {name: i for i, name in enumerate(EMOTIONS)}

# The `Usage` values of fer2013.csv, which are also the file-name prefixes of the
# Kaggle image-folder archive. Protocol: train / select / report.
TRAIN_SPLIT, VAL_SPLIT, TEST_SPLIT = "Training", "PublicTest", "PrivateTest"
SPLITS: tuple[str, ...] = (TRAIN_SPLIT, VAL_SPLIT, TEST_SPLIT)

# Rows x classes of the complete dataset, in EMOTIONS order.
FULL_COUNTS: dict[str, tuple[int, ...]] = {
    TRAIN_SPLIT: (3995, 436, 4097, 7215, 4830, 3171, 4965),
    VAL_SPLIT: (467, 56, 496, 895, 653, 415, 607),
    TEST_SPLIT: (491, 55, 528, 879, 594, 416, 626),
}


def emotion_id(name: str) -> int:
    try:
        return EMOTION_TO_ID[name.lower()]
    except KeyError:
        raise ValueError(f"unknown emotion {name!r}; expected one of {', '.join(EMOTIONS)}") from None
