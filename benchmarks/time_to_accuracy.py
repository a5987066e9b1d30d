"""Time to reach the seed paper's 65.38% on FER2013 PrivateTest, training ferlab's default
configuration (params.yaml) from a cold start on this machine.

The clock counts training only: after each epoch the model is scored on PrivateTest for this
benchmark (never for selection: the pipeline selects on PublicTest), and that scoring time is
left out. Training stops at the target, at --budget-minutes, or after params' epochs.
The seed paper took 17 hours for its 100 epochs on a CPU. Target: at most 30 minutes on 2 AVX2 cores.

Run by hand from the project root on an otherwise idle machine, after `dvc repro` made
data/processed (training from scratch; nothing from models/ is reused):
    python benchmarks/time_to_accuracy.py [--budget-minutes 60] [--target 0.6538] [-S train.epochs=30 ...] [--out ...]
Writes reports/benchmarks/time_to_accuracy.json (or --out).
"""

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from vs_fer import cpu_name  # benchmarks/ is the script's folder, so on sys.path

from ferlab.contract import normalize
from ferlab.data import arrays as arrays_mod
from ferlab.fileio import read_json, write_json
from ferlab.training.carry import overridden

OUT = Path("reports/benchmarks/time_to_accuracy.json")
PAPER = {"accuracy": 0.6538, "hours": 17, "epochs": 100}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=PAPER["accuracy"])
    parser.add_argument("--budget-minutes", type=float, default=60)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("-S", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--out", default=str(OUT), help="where to write the JSON (summary.py reads time_to_accuracy*.json)")
    args = parser.parse_args()

    from ferlab.quiet import import_tensorflow

    import_tensorflow()  # without TensorFlow's C++ notices (cuInit, one per epoch from tf.data)
    import keras

    from ferlab.training.train import train

    params = overridden(args.params, args.overrides)
    processed = Path(params.paths.processed)
    arrays = arrays_mod.load(processed / arrays_mod.ARRAY_FILE)
    meta = read_json(processed / arrays_mod.META_FILE)
    x_test, y_test = normalize(arrays.x["test"]), arrays.y["test"]
    epochs: list[dict] = []
    clock = {"start": None, "scoring": 0.0}

    class PrivateTestClock(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            clock["start"] = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            scoring_start = time.perf_counter()
            trained_s = scoring_start - clock["start"] - clock["scoring"]
            accuracy = float(np.mean(self.model.predict(x_test, batch_size=256, verbose=0).argmax(1) == y_test))
            clock["scoring"] += time.perf_counter() - scoring_start
            epochs.append(
                {
                    "epoch": epoch + 1,
                    "train_seconds": round(trained_s, 1),
                    "private_test_accuracy": round(accuracy, 4),
                    "public_test_accuracy": round(float(logs.get("val_accuracy", float("nan"))), 4),
                }
            )
            print(f"epoch {epoch + 1}: {trained_s / 60:6.1f} min of training, PrivateTest {accuracy:.4f}", flush=True)
            if accuracy >= args.target or trained_s >= args.budget_minutes * 60:
                self.model.stop_training = True

    state_dir = Path(tempfile.mkdtemp(prefix="ferlab-tta-state-"))  # a cold start: no checkpoint to resume
    result = train(
        params,
        arrays,
        meta["class_weights"],
        "time-to-accuracy",
        state_dir,
        None,
        print_fn=lambda m: print(m, flush=True),
        extra_callbacks=(PrivateTestClock(),),
    )
    reached = next((e for e in epochs if e["private_test_accuracy"] >= args.target), None)
    best = max(epochs, key=lambda e: e["private_test_accuracy"])
    summary = {
        "target_accuracy": args.target,
        "budget_minutes": args.budget_minutes,
        "overrides": args.overrides,
        "model": params.train.model,
        "precision": result.precision,
        "cpus": os.cpu_count(),
        "cpu": cpu_name(),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "(unset: the CPU's best)"),
        "load_average_at_end": os.getloadavg(),
        "train": dataclasses.asdict(params.train),
        "reached": reached is not None,
        "minutes_to_target": round(reached["train_seconds"] / 60, 1) if reached else None,
        "epoch_at_target": reached["epoch"] if reached else None,
        "best": best,
        "epochs": epochs,
        "seed_paper": PAPER,
    }
    if reached:
        print(f"reached {args.target:.2%} after {summary['minutes_to_target']} min of training (epoch {reached['epoch']})")
    else:
        print(
            f"not reached: best PrivateTest {best['private_test_accuracy']:.4f} at epoch {best['epoch']} "
            f"({best['train_seconds'] / 60:.1f} min); stopped after {epochs[-1]['train_seconds'] / 60:.1f} min"
        )
    write_json(args.out, summary)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
