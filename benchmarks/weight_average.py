"""PublicTest accuracy of epoch checkpoints and of the averages of the last N of them: the probe
behind train.average_epochs (README, Averaging the last epochs' weights). A selection aid, on
PublicTest only; scored in float32.

The trainer keeps only the last epoch's file in .ferlab/train-state/; to keep them all, copy
each as it appears while the run trains, e.g.
    mkdir -p kept && while sleep 2; do cp -n .ferlab/train-state/epoch-[0-9][0-9][0-9][0-9].weights.h5 kept/ 2>/dev/null; done

Run by hand from the project root, after `dvc repro preprocess`:
    python benchmarks/weight_average.py kept/epoch-00{36..45}.weights.h5 --last 3 5 10 [--model-options '{"widths": [...]}']
With --ends, the windows end at those epochs instead of the last file: at a constant rate a shorter run's epochs are
the first epochs of a longer one, so this tells what the same recipe with fewer epochs would have kept, e.g.
    python benchmarks/weight_average.py kept/epoch-00{21..99}.weights.h5 --last 10 20 --ends 40 60 80 99 --no-each
"""

import argparse
import json
import re
from pathlib import Path

import numpy as np

from ferlab.quiet import import_tensorflow

import_tensorflow()

from ferlab.data import arrays as arrays_mod  # noqa: E402
from ferlab.training.evaluate import predict_proba  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", nargs="+", help="epoch checkpoints (.weights.h5) in epoch order")
    parser.add_argument("--last", type=int, nargs="+", default=[3, 5, 10], help="average the last N of them")
    parser.add_argument("--ends", type=int, nargs="+", help="epochs (from the file names) where the windows end")
    parser.add_argument("--each", action=argparse.BooleanOptionalAction, default=True, help="score every file too")
    parser.add_argument("--model", default="ferlab_cnn")
    parser.add_argument("--model-options", default="{}", help="the builder options of train.model_options, as JSON")
    parser.add_argument("--processed", default="data/processed")
    args = parser.parse_args()

    import keras

    from ferlab.training import models

    data = arrays_mod.load(Path(args.processed) / arrays_mod.ARRAY_FILE)
    faces, labels = data.x["val"], data.y["val"]
    model = models.build(args.model, **json.loads(args.model_options))
    model.compile(optimizer=keras.optimizers.SGD(momentum=0.9, nesterov=True), loss="categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)  # the checkpoints hold the optimiser's state too

    def accuracy(flip: bool) -> float:
        return float((predict_proba(model, faces, flip=flip).argmax(1) == labels).mean())

    epochs = [epoch_of(path) for path in args.weights]
    ends = args.ends or [epochs[-1]]
    missing = sorted(set(ends) - set(epochs))
    if missing:
        raise SystemExit(f"error: no checkpoint of epoch {missing[0]} among the files given.")
    kept = []
    for path in args.weights:
        model.load_weights(path)
        kept.append([w.astype(np.float64) for w in model.get_weights()])
        if args.each:
            print(f"{Path(path).name}: one view {accuracy(False):.4f}, flip {accuracy(True):.4f}", flush=True)
    for end in ends:
        stop = epochs.index(end) + 1
        for n in args.last:
            if n > stop:
                continue
            window = kept[stop - n : stop]
            model.set_weights([np.mean([k[i] for k in window], axis=0).astype(np.float32) for i in range(len(kept[0]))])
            print(
                f"average of epochs {epochs[stop - n]}-{end} ({n}): one view {accuracy(False):.4f}, flip {accuracy(True):.4f}",
                flush=True,
            )


def epoch_of(path: str) -> int:
    match = re.search(r"epoch-(\d+)", Path(path).name)
    if not match:
        raise SystemExit(f"error: {path} is not named epoch-<number>; the trainer's checkpoints are.")
    return int(match.group(1))


if __name__ == "__main__":
    main()
