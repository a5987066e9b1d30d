"""Training on a machine with JAX but without TensorFlow, DVC or MLflow (a lent GPU machine): what travels.

  pack   (here) data/processed -> one file: the Training and PublicTest faces (PrivateTest never
         leaves this machine), preprocess' class weights and the data's digest; the faces stored as
         MED-predictor residuals + lzma, losslessly (about 56 MB for FER2013, against 87 MB).
  train  (there) the one trainer with train.engine=jax on those faces, params.yaml and `-S` values as
         `dvc exp run -S` takes them; it writes the run's resumable state (paths.train_state) and nothing else.

Back here, with that state in paths.train_state, `dvc exp run -S train.engine=jax -S <the same values>` finds
it finished (the same fingerprint: params and data) and trains no epoch: the train stage writes the model, the
reports and the MLflow run (the epochs' metrics too), then evaluate and package run as after any training
(docs/experiments.md, Training on a GPU machine without TensorFlow).

    python -m ferlab.training.carry pack --out .gpu/fer_train_val.npz
    KERAS_BACKEND=jax python -m ferlab.training.carry train --data .gpu/fer_train_val.npz --state OUT/train-state -S ...
"""

import argparse
import json
import lzma
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

from ferlab import config
from ferlab.errors import FerlabError
from ferlab.fileio import atomic_path, read_json
from ferlab.training.state import EpochState


def _med(a, b, c):
    """LOCO-I median edge predictor from left `a`, up `b`, up-left `c` (int16 arrays)."""
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    return np.where(c >= hi, lo, np.where(c <= lo, hi, a + b - c))


def encode_faces(x: np.ndarray) -> bytes:
    x = x.astype(np.int16)
    a, b, c = np.zeros_like(x), np.zeros_like(x), np.zeros_like(x)
    a[:, :, 1:], b[:, 1:, :], c[:, 1:, 1:] = x[:, :, :-1], x[:, :-1, :], x[:, :-1, :-1]
    r = (x - _med(a, b, c)).astype(np.uint8).view(np.int8).astype(np.int16)
    zigzag = np.where(r >= 0, 2 * r, -2 * r - 1).astype(np.uint8)
    return lzma.compress(zigzag.tobytes(), preset=6)


def decode_faces(blob: bytes, shape) -> np.ndarray:
    z = np.frombuffer(lzma.decompress(blob), np.uint8).reshape(shape).astype(np.int16)
    r = np.where(z % 2 == 0, z // 2, -(z + 1) // 2)
    x = np.zeros(shape, np.int16)
    zero = np.zeros(shape[0], np.int16)
    for i in range(shape[1]):
        for j in range(shape[2]):
            a = x[:, i, j - 1] if j else zero
            b = x[:, i - 1, j] if i else zero
            c = x[:, i - 1, j - 1] if i and j else zero
            x[:, i, j] = (_med(a, b, c) + r[:, i, j]) % 256
    return x.astype(np.uint8)


def pack(processed: Path, raw_summary: Path, out: Path) -> dict:
    """Write the file that travels; what it holds, in numbers."""
    from ferlab.data import arrays as arrays_mod

    data = arrays_mod.load(Path(processed) / arrays_mod.ARRAY_FILE)
    meta = read_json(Path(processed) / arrays_mod.META_FILE)
    faces = np.concatenate([data.x["train"], data.x["val"]])
    blob = encode_faces(faces)
    if not np.array_equal(decode_faces(blob, faces.shape), faces):
        raise FerlabError("the faces codec did not give the faces back: nothing written")
    with atomic_path(out) as staged, open(staged, "wb") as f:
        np.savez(
            f,
            faces_lzma=np.frombuffer(blob, np.uint8),
            n_train=len(data.y["train"]),
            y_train=data.y["train"],
            y_val=data.y["val"],
            class_weights=json.dumps(meta["class_weights"]),
            data_digest=read_json(raw_summary)["table_sha256"],
        )
    return {"train": len(data.y["train"]), "val": len(data.y["val"]), "megabytes": round(Path(out).stat().st_size / 1e6, 1)}


def unpack(path: Path):
    """(Arrays of Training and PublicTest, class weights, data digest) from a packed file."""
    from ferlab.data.arrays import Arrays

    with np.load(path) as d:
        n_train, y_train, y_val = int(d["n_train"]), d["y_train"], d["y_val"]
        faces = decode_faces(d["faces_lzma"].tobytes(), (n_train + len(y_val), 48, 48))
        weights, digest = json.loads(str(d["class_weights"])), str(d["data_digest"])
    return Arrays({"train": faces[:n_train], "val": faces[n_train:]}, {"train": y_train, "val": y_val}, {}), weights, digest


def overridden(path: str | Path, overrides: list[str]) -> config.Params:
    """params.yaml with `dvc exp run -S` values: `section.key=value` sets a key, `++section.key=value` may add
    one; the values are YAML (`[64,128,256,512]`, `0.15`, `false`); the result is checked as params.yaml is."""
    raw = yaml.safe_load(Path(path).read_text())
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise FerlabError(f"-S {item!r} is not SECTION.KEY=VALUE.")
        adding = key.startswith("+")
        *parents, last = key.lstrip("+").split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {}) if adding else node[part]
        if not adding and last not in node:
            raise FerlabError(f"-S {item!r}: no key {key!r} in {path} (a leading ++ adds one).")
        node[last] = yaml.safe_load(value)
    staged = Path(tempfile.mkdtemp(prefix="ferlab-params-")) / "params.yaml"
    staged.write_text(yaml.safe_dump(raw))
    return config.load(staged)


def train_state(data: Path, state: Path, params: config.Params, print_fn=lambda line: print(line, flush=True)) -> dict:
    """Train into `state` as the train stage would, without a tracker; a summary of the run."""
    from ferlab.training import engine

    if params.train.engine != "jax":
        raise FerlabError("carry train runs the JAX engine: add -S train.engine=jax (and the same to dvc exp run back here).")
    engine.select("jax")
    from ferlab.training.train import train

    arrays, weights, digest = unpack(data)
    print_fn(f"{len(arrays.y['train'])} Training and {len(arrays.y['val'])} PublicTest faces; data {digest[:12]}")
    result = train(params, arrays, weights, digest, state, print_fn=print_fn)
    kept = EpochState(state, print_fn)
    kept.drop_checkpoint(read_json(kept.meta_path))  # not needed to hand the model on: a third less to carry
    return {"best_epoch": result.best_epoch, "best_val_accuracy": result.best_val_accuracy, "averaged_epochs": result.averaged_epochs}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ferlab.training.carry", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="data/processed -> the file that travels (here)")
    p.add_argument("--out", default=".gpu/fer_train_val.npz")
    p.add_argument("--params", default="params.yaml")
    p = sub.add_parser("train", help="train into a state folder with train.engine=jax (there)")
    p.add_argument("--data", default=".gpu/fer_train_val.npz")
    p.add_argument("--state", required=True, help="the folder to write; back here it becomes paths.train_state")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("-S", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE", help="as dvc exp run -S")
    args = parser.parse_args(argv)
    try:
        if args.command == "pack":
            paths = config.load(args.params).paths
            print(json.dumps(pack(Path(paths.processed), Path(paths.raw_summary), Path(args.out))), flush=True)
        else:
            print(json.dumps(train_state(Path(args.data), Path(args.state), overridden(args.params, args.overrides))), flush=True)
    except FerlabError as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
