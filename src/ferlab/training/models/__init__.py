"""Model architectures by name, as chosen by `train.model` in params.yaml."""

import inspect

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
    takes = [p for p in inspect.signature(builder).parameters if p not in ("input_shape", "num_classes")]
    unknown = sorted(set(options) - set(takes))
    if unknown:
        verb = "is not an option" if len(unknown) == 1 else "are not options"
        raise FerlabError(f"params.yaml: train.model_options {', '.join(unknown)} {verb} of {name}; it takes {', '.join(takes)}.")
    return builder(input_shape=(IMAGE_SIZE, IMAGE_SIZE, 1), num_classes=NUM_CLASSES, **options)
