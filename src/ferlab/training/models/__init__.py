"""Model architectures by name, as chosen by `train.model` in params.yaml."""

from ferlab.contract import IMAGE_SIZE, NUM_CLASSES
from ferlab.errors import FerlabError

ARCHITECTURES = ("ferlab_cnn", "paper_cnn")


def build(name: str, **options):
    if name == "paper_cnn":
        from ferlab.training.models.paper_cnn import build as builder
    elif name == "ferlab_cnn":
        from ferlab.training.models.ferlab_cnn import build as builder
    else:
        raise FerlabError(f"params.yaml: unknown train.model {name!r}; choose one of {', '.join(ARCHITECTURES)}.")
    return builder(input_shape=(IMAGE_SIZE, IMAGE_SIZE, 1), num_classes=NUM_CLASSES, **options)
