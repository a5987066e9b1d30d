"""Typed loading of params.yaml: one dataclass per section; unknown keys, values of the wrong
type and values outside a setting's choices are errors when the file is loaded, so a typo
stops `dvc repro` in its first stage rather than after training.

One source of defaults: each field's default is the value the committed params.yaml gives it
(a test holds the two equal), so `Params()` (what the tools use outside a project) and a
params.yaml that leaves a key out mean the recipe that params.yaml states. Change a default in
both places."""

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from ferlab.errors import FerlabError


@dataclass(frozen=True)
class Paths:
    raw_table: str = "data/raw/fer2013.parquet"
    raw_summary: str = "data/raw/summary.json"
    processed: str = "data/processed"
    validation_report: str = "reports/validation"
    preprocess_report: str = "reports/preprocess"
    model: str = "models/model.h5"
    train_report: str = "reports/train"
    train_state: str = ".ferlab/train-state"
    evaluate_report: str = "reports/evaluate"
    metrics: str = "reports/metrics.json"
    bundle: str = "models/bundle"


@dataclass(frozen=True)
class Fetch:
    source: str = "auto"
    drop_folder: str = "data/external"
    candidates: list[str] = field(default_factory=lambda: ["../shared/fer2013/archive.zip"])
    kaggle_cache: str = "data/external/kaggle"
    sha256: dict[str, str] = field(default_factory=dict)
    limit_per_class: int | None = None
    max_unreadable: int = 0


@dataclass(frozen=True)
class Validate:
    blank_std_max: float = 2.0
    exact_counts: Literal["auto", "yes", "no"] | bool = "auto"
    max_blank_fraction: float = 0.05
    minority_share_warn: float = 0.05  # classes below this share of a split are reported as imbalance


@dataclass(frozen=True)
class Augment:
    horizontal_flip: bool = True
    translate: int = 4  # random shift of up to this many pixels each way
    rotation_degrees: float = 10.0
    zoom: float = 0.1
    warp_probability: float = 0.5  # share of faces that get the rotation and zoom; the rest keep whole pixels
    low_resolution_probability: float = 0.15  # share of faces shrunk to a random size and scaled back
    low_resolution_min_px: int = 20  # the smallest size they are shrunk to (one size per batch, up to 47)
    brightness: float = 0.2
    contrast: float = 0.2

    def __post_init__(self):
        for name in ("warp_probability", "low_resolution_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise FerlabError(f"params.yaml: `preprocess.augment.{name}` must lie in [0, 1], not {getattr(self, name)!r}.")
        if not 4 <= self.low_resolution_min_px < 48:
            raise FerlabError(
                f"params.yaml: `preprocess.augment.low_resolution_min_px` must lie in [4, 47], not {self.low_resolution_min_px!r}."
            )


@dataclass(frozen=True)
class Preprocess:
    drop_blank_train: bool = True
    drop_test_leaks: bool = False
    class_weights: Literal["none", "balanced", "sqrt"] = "sqrt"
    oversample_min_count: int = 0  # offline oversampling of minority classes up to this count
    augment: Augment = field(default_factory=Augment)
    sample_sheet_faces: int = 8


@dataclass(frozen=True)
class Train:
    model: Literal["ferlab_cnn", "paper_cnn"] = "ferlab_cnn"
    model_options: dict = field(default_factory=dict)
    epochs: int = 45
    batch_size: int = 128
    optimizer: Literal["adam", "adamw", "sgd"] = "sgd"
    learning_rate: float = 0.05
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.005
    schedule: Literal["constant", "cosine"] = "cosine"  # both after a linear warm-up of warmup_epochs
    warmup_epochs: int = 1
    label_smoothing: float = 0.1
    class_weights: bool = True  # weight the loss with preprocess' class weights
    early_stopping_patience: int = 12  # epochs without a better PublicTest accuracy
    # Average the weights of the schedule's last N epochs (0: off); the average replaces the best
    # epoch when its PublicTest accuracy is higher. It changes what is kept, not the training.
    average_epochs: int = 0
    precision: Literal["auto", "float32", "mixed_bfloat16", "mixed_float16"] = "auto"
    deterministic: bool = True  # TensorFlow op determinism: the same seed gives the same model
    # The Keras backend that trains: tensorflow, or jax (a GPU machine with JAX and no TensorFlow; training.engine)
    engine: Literal["tensorflow", "jax"] = "tensorflow"
    experiment: str = "ferlab"  # MLflow experiment name


@dataclass(frozen=True)
class Evaluate:
    tta_flip: bool = True  # also report horizontal-flip test-time augmentation, separately
    tta_ten_crop: bool = True  # and ten-crop (four corners, centre, their mirrors), separately
    tta_scale_rotate: bool = True  # and scale-rotate (unmoved, scaled 0.9 and 1.1, turned -8 and 8 degrees, their mirrors)
    batch_size: int = 256
    example_faces: int = 32
    calibrate: bool = True  # fit a softmax temperature on PublicTest; the bundle carries it


@dataclass(frozen=True)
class Package:
    registered_model: str = "ferlab-emotion"
    tflite: Literal["float16", "dynamic", "none"] = "float16"
    max_tflite_drop: float = 0.005  # PrivateTest accuracy the TFLite export may lose
    register: bool = True  # register a new MLflow model version (alias `candidate`)


@dataclass(frozen=True)
class Params:
    seed: int = 42
    paths: Paths = field(default_factory=Paths)
    fetch: Fetch = field(default_factory=Fetch)
    validate: Validate = field(default_factory=Validate)
    preprocess: Preprocess = field(default_factory=Preprocess)
    train: Train = field(default_factory=Train)
    evaluate: Evaluate = field(default_factory=Evaluate)
    package: Package = field(default_factory=Package)


def _build(cls, data, where: str):
    if not isinstance(data, dict):
        raise FerlabError(f"params.yaml: `{where}` must be a mapping, not {data!r}.")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise FerlabError(f"params.yaml: unknown key(s) {', '.join(unknown)} in `{where}`; known: {', '.join(sorted(names))}.")
    values = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            value = _build(hint, value, f"{where}.{name}")
        else:
            _check(value, hint, f"{where}.{name}")
        values[name] = value
    return cls(**values)


def _fits(value, hint) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return value in args
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is list or hint is list:
        return isinstance(value, list) and all(_fits(v, args[0]) for v in value) if args else isinstance(value, list)
    if origin is dict or hint is dict:
        return isinstance(value, dict) and (not args or all(_fits(k, args[0]) and _fits(v, args[1]) for k, v in value.items()))
    return True


def _describe(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in args)
    if hint is type(None):
        return "null"
    name = getattr(origin or hint, "__name__", str(hint))
    return {
        "int": "an integer",
        "float": "a number",
        "bool": "true or false",
        "str": "a string",
        "list": "a list",
        "dict": "a mapping",
    }.get(name, name)


def _check(value, hint, where: str) -> None:
    if not _fits(value, hint):
        raise FerlabError(f"params.yaml: `{where}` must be {_describe(hint)}, not {value!r}.")


def load(path: str | os.PathLike = "params.yaml") -> Params:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise FerlabError(f"{path} not found; run the stages from the project root.") from None
    except yaml.YAMLError as err:
        raise FerlabError(f"{path} is not valid YAML: {err}") from None
    return _build(Params, data, "params")


_TEMP_EXPS = f"{os.sep}.dvc{os.sep}tmp{os.sep}exps{os.sep}"


def project_root(env: typing.Mapping[str, str] = os.environ) -> Path:
    """The project's folder: DVC_ROOT when DVC runs a stage (the project itself, not the copy that
    `dvc exp run --temp` works in), else the current folder."""
    root = env.get("DVC_ROOT") or os.getcwd()
    if _TEMP_EXPS in root:
        root = root.split(_TEMP_EXPS)[0]
    return Path(root).resolve()


def current() -> Params:
    """What the tools (`ferlab detect`, `serve`, `models`, ...) go by: ./params.yaml when they run
    in a ferlab project, else the defaults. One source, so a changed `package.registered_model`
    or `paths.bundle` moves every tool together."""
    return load("params.yaml") if Path("params.yaml").is_file() else Params()


def as_flat_dict(obj, prefix: str = "") -> dict[str, object]:
    """Flatten params for experiment trackers: {"preprocess.augment.zoom": 0.1, ...}."""
    if dataclasses.is_dataclass(obj):
        obj = dataclasses.asdict(obj)
    flat: dict[str, object] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(as_flat_dict(value, name + "."))
        else:
            flat[name] = value
    return flat
