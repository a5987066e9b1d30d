"""Training throughput (images/second) of architectures and precision policies on this machine.

Run by hand on an otherwise idle machine:
    python benchmarks/train_throughput.py [--policies float32 mixed_bfloat16] [--repeats 3]
    python benchmarks/train_throughput.py --models ferlab_cnn 'ferlab_cnn:{"crop": 48}' --policies float32
A model is a name below, or `ferlab_cnn:` / `paper_cnn:` followed by JSON builder options
(train.model_options). ONEDNN_MAX_CPU_ISA=AVX2 in the environment makes an AVX-512 CPU run
oneDNN's AVX2 kernels: an approximation of an AVX2-only CPU's instruction mix, not of its speed.
Prints a table and writes reports/benchmarks/train_throughput.json. Random inputs: the
speed of a training step does not depend on the pixel values.
"""

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

from ferlab.quiet import import_tensorflow

import_tensorflow()  # before Keras: without TensorFlow's C++ banners

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402

from ferlab.training import models, precision  # noqa: E402


def vgg(widths, depths, batch_norm):
    """The alternatives measured when choosing the default (ferlab_cnn is widths 16..128 with BN)."""

    def build():
        x = inputs = keras.Input((48, 48, 1))
        for width, depth in zip(widths, depths):
            for _ in range(depth):
                x = layers.Conv2D(width, 3, padding="same", use_bias=not batch_norm)(x)
                if batch_norm:
                    x = layers.BatchNormalization()(x)
                x = layers.Activation("relu")(x)
            x = layers.MaxPooling2D(2)(x)
        x = layers.GlobalAveragePooling2D()(x)
        x = layers.Dense(256, activation="relu")(x)
        return keras.Model(inputs, layers.Dense(7, activation="softmax", dtype="float32")(x))

    return build


CANDIDATES = {
    "paper_cnn": lambda: models.build("paper_cnn"),
    "ferlab_cnn": lambda: models.build("ferlab_cnn"),
    "vgg32-256_bn": vgg((32, 64, 128, 256), (1, 2, 2, 2), True),
    "vgg32-256": vgg((32, 64, 128, 256), (1, 2, 2, 2), False),
    "vgg24-192_bn": vgg((24, 48, 96, 192), (1, 2, 2, 2), True),
    "vgg16-128": vgg((16, 32, 64, 128), (1, 2, 2, 2), False),
}


def builder(name: str):
    if name in CANDIDATES:
        return CANDIDATES[name]
    arch, _, options = name.partition(":")
    return lambda: models.build(arch, **json.loads(options or "{}"))


class StepClock(keras.callbacks.Callback):
    """From the start of the first training step to the end of the last: each `fit` call also
    spends seconds setting up (iterator, callbacks), which a real epoch of 225 steps pays once."""

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0:
            self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.end = time.perf_counter()


def images_per_second(build, policy: str, batch: int, steps: int) -> float:
    keras.mixed_precision.set_global_policy(policy)
    model = build()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = np.random.rand(batch * steps, 48, 48, 1).astype("float32")
    y = np.random.randint(0, 7, batch * steps)
    model.fit(x[: batch * 3], y[: batch * 3], batch_size=batch, epochs=1, verbose=0)  # warm-up / tracing
    clock = StepClock()
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0, callbacks=[clock])
    return batch * steps / (clock.end - clock.start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(CANDIDATES))
    parser.add_argument("--policies", nargs="+", default=["float32", "mixed_bfloat16"])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="reports/benchmarks/train_throughput.json")
    args = parser.parse_args()
    results = []
    for name in args.models:
        for policy in args.policies:
            runs = [images_per_second(builder(name), policy, args.batch, args.steps) for _ in range(args.repeats)]
            median = statistics.median(runs)
            results.append(
                {
                    "model": name,
                    "policy": policy,
                    "images_per_s_median": round(median, 1),
                    "images_per_s_runs": [round(r, 1) for r in runs],
                    "seconds_per_fer2013_epoch": round(28709 / median),
                }
            )
            print(
                f"{name:30s} {policy:15s} {median:8.1f} img/s  (runs {', '.join(f'{r:.0f}' for r in runs)})  ~{28709 / median:.0f} s/epoch",
                flush=True,
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    bf16 = any(f in precision.cpu_flags() for f in precision.BF16_CPU_FLAGS)
    out.write_text(
        json.dumps(
            {
                "machine": {
                    "cpus": os.cpu_count(),
                    "processor": platform.processor() or platform.machine(),
                    "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
                    "native_bf16": bf16,
                    "auto_policy": precision.resolve("auto", 0),
                },
                "batch": args.batch,
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
