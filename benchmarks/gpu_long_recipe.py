"""ferlab's long recipe on a lent GPU (Keras 3 on JAX), scored here with ferlab's own evaluation.

Three subcommands:

  pack   (here, numpy only) data/processed/arrays.npz -> a small file for the GPU machine:
         Training and PublicTest faces only (PrivateTest never leaves this machine), the
         preprocess stage's class weights (data/processed/meta.json), the faces stored as
         MED-predictor residuals + lzma (about 56 MB against 71 MB for np.savez_compressed).
  train  (on the GPU machine; KERAS_BACKEND=jax, no TensorFlow) the network that --params names
         (src/ferlab/training/models/; ferlab_cnn at --widths), trained with the recipe of
         src/ferlab/training/train.py and that params.yaml (default: the project's): for the
         default, SGD Nesterov 0.9, peak lr 0.05 after a 1-epoch linear warm-up from lr/10, cosine
         decay to 1%, Keras' weight decay 5e-4, batch 128, label smoothing 0.1, sqrt class weights
         in the loss (--class-weights overrides train.class_weights); adam/adamw and a constant
         rate too (the paper's run); ferlab's augmentation (rotation and zoom bilinear, as TF
         samples them; the low-resolution shrink as one matrix per size, as TF resizes),
         mixed_bfloat16.
         The epoch count is min(--max-epochs, what fits --budget-minutes), fitted after the
         warm-up epoch and fitted again after epoch REFIT_EPOCH from the epochs' measured time:
         trainings that share the GPU slow each other down only once all have compiled (two runs
         cut at 360 of 400 epochs by the first estimate alone). The learning rate of the epochs
         before the refit follows the first fit's cosine (at epoch 5, 400 against 360
         epochs: 0.006% apart).
         PublicTest (one view) is scored in
         float32 after every epoch; the best epoch's weights go to --out/best.weights.h5 as soon
         as it is found, the curves to --out/history.json after every epoch. With
         train.average_epochs, the average of the last epochs' weights replaces them at the end
         when its PublicTest accuracy is higher (as the train stage does).
  score  (here, the project venv, TensorFlow) loads best.weights.h5 into ferlab's builder,
         saves a float32 .h5, scores PublicTest and PrivateTest with ferlab.training.evaluate (one view,
         flip, ten-crop and scale-rotate TTA; evaluate's calibration numbers) and logs one MLflow run in the
         `ferlab` experiment, with the metric names of the train and evaluate stages (--no-log: none).

Run from the project root:
    python benchmarks/gpu_long_recipe.py pack                          # -> .gpu/fer_train_val.npz
    # on the GPU machine (keras 3.15.1, namex, optree carried as wheels in .whl, installed to /tmp/site):
    PYTHONPATH=/tmp/site:src KERAS_BACKEND=jax python3 benchmarks/gpu_long_recipe.py train \\
        --max-epochs 400 --budget-minutes 7 --data .gpu/fer_train_val.npz --out OUT \\
        -S '++train.model_options.widths=[64,128,256,512]' -S '++train.model_options.depths=[2,2,2,2]' \\
        -S preprocess.augment.rotation_degrees=15 -S preprocess.augment.zoom=0.15 \\
        -S preprocess.augment.warp_probability=1 -S '++train.model_options.dropout=0.4' \\
        -S preprocess.augment.low_resolution_probability=0 -S train.weight_decay=0.0005   # the long recipe
        # (H100: 0.55 s an epoch, 1.2 s beside a second run)
    # the paper's run: -S train.model=paper_cnn -S train.optimizer=adam -S train.learning_rate=0.0001
    #   -S train.batch_size=32 -S train.schedule=constant -S train.warmup_epochs=0 -S train.label_smoothing=0
    #   -S train.class_weights=false -S preprocess.augment.low_resolution_probability=0 --max-epochs 100
    python benchmarks/gpu_long_recipe.py score --weights OUT/best.weights.h5 --run-name gpu-w64-d2-geo15-360
"""

import argparse
import dataclasses
import json
import lzma
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LONG_WIDTHS = (48, 96, 192, 384)
sys.path.insert(0, str(ROOT / "src"))


REFIT_EPOCH = 5  # the epoch after which the epoch count is fitted to the budget again


def epochs_fitting(seconds_left: float, seconds_per_epoch: float, done: int) -> int:
    """The number of epochs, `done` of them finished, that ends within `seconds_left` more seconds."""
    return done + max(int(seconds_left // seconds_per_epoch), 0)


# ---------------------------------------------------------------- faces codec (pack / train)


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


def load_packed(path) -> dict:
    with np.load(path) as d:
        out = {k: d[k] for k in d.files}
    if "faces_lzma" in out:
        n_train, n_val = int(out["n_train"]), int(out["n_val"])
        faces = decode_faces(out.pop("faces_lzma").tobytes(), (n_train + n_val, 48, 48))
        out["x_train"], out["x_val"] = faces[:n_train], faces[n_train:]
    return out


def cmd_pack(args) -> None:
    from ferlab.data import arrays as arrays_mod

    data = arrays_mod.load(Path(args.processed) / arrays_mod.ARRAY_FILE)
    meta = json.loads((Path(args.processed) / arrays_mod.META_FILE).read_text())
    weights = np.array([meta["class_weights"][str(i)] for i in range(7)], np.float32)
    faces = np.concatenate([data.x["train"], data.x["val"]])
    blob = encode_faces(faces)
    assert np.array_equal(decode_faces(blob, faces.shape), faces), "codec is not lossless"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        out,
        faces_lzma=np.frombuffer(blob, np.uint8),
        n_train=len(data.y["train"]),
        n_val=len(data.y["val"]),
        y_train=data.y["train"],
        y_val=data.y["val"],
        class_weights=weights,
    )
    print(
        f"wrote {out}: {out.stat().st_size / 1e6:.1f} MB, {len(data.y['train'])} Training + {len(data.y['val'])} "
        f"PublicTest faces (no PrivateTest), class weights {weights.tolist()}"
    )


# ---------------------------------------------------------------- train (GPU machine, Keras on JAX)


def _area_matrix(size: int, side: int) -> np.ndarray:
    """(side, size): TF's area resize along one axis, each output pixel the overlap-weighted mean of
    the input pixels its footprint covers."""
    scale = size / side
    m = np.zeros((side, size))
    for out in range(side):
        lo, hi = out * scale, (out + 1) * scale
        for i in range(int(np.floor(lo)), min(int(np.ceil(hi)), size)):
            m[out, i] = (min(hi, i + 1) - max(lo, i)) / scale
    return m


def _bilinear_matrix(size: int, side: int) -> np.ndarray:
    """(size, side): TF's bilinear resize (half-pixel centres, edges clamped) from `side` up to `size`."""
    m = np.zeros((size, side))
    for out in range(size):
        src = (out + 0.5) * side / size - 0.5
        low = np.floor(src)
        lower, upper = int(max(low, 0)), int(min(np.ceil(src), side - 1))
        m[out, lower] += 1.0 - (src - low)
        m[out, upper] += src - low
    return m


def low_resolution_operators(size: int, min_px: int) -> np.ndarray:
    """(size - min_px, size, size) float32: for each side min_px..size-1, the matrix M such that
    M @ face @ M.T is ferlab.training.augment._low_resolution's shrink (area) and scale back
    (bilinear) of a face; both resizes are separable and linear."""
    return np.stack([_bilinear_matrix(size, side) @ _area_matrix(size, side) for side in range(min_px, size)]).astype(np.float32)


def augment_jax(faces, key, aug):
    """ferlab.training.augment.apply in JAX: uint8 faces (B, 48, 48) -> float32 (B, 48, 48, 1) in [0, 1].
    Mirror (p=0.5), integer shift of up to `translate` px each way with TF's REFLECT border
    (d c b a | a b c d, numpy's 'symmetric'), the low-resolution shrink and scale back of a share of the
    faces, brightness +-b, contrast x[1-c, 1+c] about the mean, clip."""
    import jax
    import jax.numpy as jnp

    from ferlab.contract import PIXEL_SCALE

    k = jax.random.split(key, 4)
    b, t = faces.shape[0], int(aug.translate)
    x = faces.astype(jnp.float32) / PIXEL_SCALE
    if aug.horizontal_flip:
        x = jnp.where((jax.random.uniform(k[0], (b,)) < 0.5)[:, None, None], x[:, :, ::-1], x)
    if aug.rotation_degrees or aug.zoom:
        x = _turn_and_zoom(x, jax.random.split(k[1], 3), aug)
    elif t:
        shift = jax.random.randint(k[1], (b, 2), -t, t + 1)  # (dx, dy): output[i, j] = input[i + dy, j + dx]
        padded = jnp.pad(x, ((0, 0), (t, t), (t, t)), mode="symmetric")
        size = faces.shape[1:]
        x = jax.vmap(lambda img, s: jax.lax.dynamic_slice(img, (t + s[1], t + s[0]), size))(padded, shift)
    if aug.low_resolution_probability:  # own keys: the other draws stay those of a run without it
        shrunk = jax.random.uniform(jax.random.fold_in(k[0], 2), (b,)) < aug.low_resolution_probability
        operators = jnp.asarray(low_resolution_operators(faces.shape[1], aug.low_resolution_min_px))
        m = operators[jax.random.randint(jax.random.fold_in(k[0], 3), (), 0, len(operators))]  # one size per batch
        x = jnp.where(shrunk[:, None, None], jnp.einsum("ij,bjk,lk->bil", m, x, m), x)
    if aug.brightness:
        x = x + jax.random.uniform(k[2], (b, 1, 1), minval=-aug.brightness, maxval=aug.brightness)
    if aug.contrast:
        factor = jax.random.uniform(k[3], (b, 1, 1), minval=1 - aug.contrast, maxval=1 + aug.contrast)
        mean = x.mean(axis=(1, 2), keepdims=True)
        x = (x - mean) * factor + mean
    return jnp.clip(x, 0.0, 1.0)[..., None]


def _turn_and_zoom(x, keys, aug):
    """ferlab.training.augment._geometry in JAX: rotation by up to `rotation_degrees` and zoom by up to
    `zoom` about the centre (on `warp_probability` of the faces), then a whole-pixel shift of up
    to `translate`; bilinear sampling with the mirrored border (TF's REFLECT, scipy's 'reflect')."""
    import jax
    import jax.numpy as jnp
    from jax.scipy.ndimage import map_coordinates

    b, size = x.shape[0], x.shape[1]
    angle = jax.random.uniform(keys[0], (b,), minval=-1.0, maxval=1.0) * jnp.deg2rad(aug.rotation_degrees)
    scale = 1.0 + jax.random.uniform(keys[1], (b,), minval=-1.0, maxval=1.0) * aug.zoom
    if aug.warp_probability < 1.0:  # the others sample whole pixels: an exact copy, as in TF
        warped = jax.random.uniform(jax.random.fold_in(keys[0], 1), (b,)) < aug.warp_probability
        angle, scale = jnp.where(warped, angle, 0.0), jnp.where(warped, scale, 1.0)
    shift = jax.random.randint(keys[2], (b, 2), -int(aug.translate), int(aug.translate) + 1).astype(jnp.float32)
    cos, sin = jnp.cos(angle) / scale, jnp.sin(angle) / scale
    centre = (size - 1) / 2.0
    rows, cols = jnp.meshgrid(jnp.arange(size, dtype=jnp.float32) - centre, jnp.arange(size, dtype=jnp.float32) - centre, indexing="ij")

    def one(img, c, s_, d):
        x_in = c * cols - s_ * rows + centre + d[0]
        y_in = s_ * cols + c * rows + centre + d[1]
        return map_coordinates(img, [y_in, x_in], order=1, mode="reflect")

    return jax.vmap(one)(x, cos, sin, shift)


def make_train_step(model, optimizer, loss_fn, aug, xt, yt, wt, base_key):
    """A jitted step (state, batch indices, global step) -> state, as Keras' JAX fit does one:
    stateless forward pass, class-weighted loss, optimizer.stateless_apply. A new function per
    call, so that jit traces it (and the optimizer's current schedule) afresh."""
    import jax
    import jax.numpy as jnp

    def loss_and_updates(tv, ntv, x, y, sw):
        probs, ntv = model.stateless_call(tv, ntv, x, training=True)
        return loss_fn(y, probs, sample_weight=sw), (probs, ntv)

    grad_fn = jax.value_and_grad(loss_and_updates, has_aux=True)

    def train_step(state, index, step):
        tv, ntv, ov, sums = state
        labels = yt[index]
        x = augment_jax(xt[index], jax.random.fold_in(base_key, step), aug)
        y = jax.nn.one_hot(labels, 7)
        sw = wt[labels]
        (loss, (probs, ntv)), grads = grad_fn(tv, ntv, x, y, sw)
        tv, ov = optimizer.stateless_apply(ov, grads, tv)
        correct = (probs.argmax(-1) == labels).astype(jnp.float32)
        b = jnp.float32(labels.shape[0])
        # Keras' fit: loss = batch-size-weighted mean of batch losses; accuracy weighted by sample_weight
        sums = sums + jnp.stack([loss * b, b, (correct * sw).sum(), sw.sum(), correct.sum()])
        return tv, ntv, ov, sums

    return jax.jit(train_step, donate_argnums=0)


def cmd_train(args) -> None:
    from params_overrides import overridden  # benchmarks/ is the script's folder, so on sys.path

    params = overridden(args.params, args.overrides)
    cfg, aug = params.train, params.preprocess.augment
    assert os.environ.get("KERAS_BACKEND") == "jax", "run train with KERAS_BACKEND=jax"
    import jax
    import jax.numpy as jnp
    import keras

    from ferlab.contract import PIXEL_SCALE
    from ferlab.training.models import build

    assert "tensorflow" not in sys.modules
    widths = None
    if cfg.model == "ferlab_cnn":  # --widths, else the params' widths, else the long recipe's
        widths = [int(w) for w in args.widths.split(",")] if args.widths else list(cfg.model_options.get("widths", LONG_WIDTHS))
    options = cfg.model_options | ({"widths": widths} if widths else {})
    class_weights = args.class_weights or ("sqrt" if cfg.class_weights else "none")
    recipe = {
        "model": cfg.model,
        "model_options": options,
        "widths": widths,
        "optimizer": cfg.optimizer + (" (Nesterov)" if cfg.optimizer == "sgd" else ""),
        "learning_rate": cfg.learning_rate,
        "momentum": cfg.momentum,
        "weight_decay": cfg.weight_decay,
        "schedule": "cosine, alpha 0.01" if cfg.schedule == "cosine" else cfg.schedule,
        "warmup_epochs": cfg.warmup_epochs,
        "batch_size": cfg.batch_size,
        "label_smoothing": cfg.label_smoothing,
        "class_weights": class_weights,
        "augment": dataclasses.asdict(aug),
        "precision": args.precision,
        "publictest_scored_in": "float32",
        "seed": params.seed,
        "early_stopping": "off (best PublicTest epoch kept)",
        "average_epochs": cfg.average_epochs,
        # the params as trained (params.yaml given by --params), for score's MLflow run
        "params": {"seed": params.seed, "train": dataclasses.asdict(cfg), "preprocess": dataclasses.asdict(params.preprocess)},
    }
    assert cfg.optimizer in ("sgd", "adam", "adamw") and cfg.schedule in ("cosine", "constant"), "unknown recipe in params"

    data = load_packed(args.data)
    x_train, y_train = data["x_train"], data["y_train"].astype(np.int32)
    x_val, y_val = data["x_val"], data["y_val"].astype(np.int32)
    if args.limit:  # a seeded random subset: the arrays are ordered by class
        pick = np.random.default_rng(0).permutation(len(y_train))[: args.limit]
        x_train, y_train = x_train[pick], y_train[pick]
        pick = np.random.default_rng(1).permutation(len(y_val))[: args.limit]
        x_val, y_val = x_val[pick], y_val[pick]
    table = data["class_weights"] if class_weights == "sqrt" else np.ones(7, np.float32)
    n, bs = len(y_train), cfg.batch_size
    steps = int(np.ceil(n / bs))
    device = jax.devices()[0]
    device_name = f"{device.platform}:{getattr(device, 'device_kind', device)}"
    print(
        f"device {device_name}; keras {keras.__version__}, jax {jax.__version__}; {n} Training, {len(y_val)} "
        f"PublicTest faces; {steps} steps/epoch; class weights {np.round(table, 4).tolist()}",
        flush=True,
    )

    keras.utils.set_random_seed(params.seed)
    if args.precision != "float32":
        keras.mixed_precision.set_global_policy(args.precision)
    model = build(cfg.model, **options)
    print(f"{model.count_params():,} weights; policy {keras.mixed_precision.global_policy().name}", flush=True)
    # PublicTest is scored by a float32 twin of the network (same variables, same order), as
    # `score` and ferlab's evaluate stage score the saved model: XLA:CPU was seen to give NaN
    # rows in mixed_bfloat16 inference (jax 0.11.2), which would corrupt the selection.
    keras.mixed_precision.set_global_policy("float32")
    eval_model = build(cfg.model, **options)
    keras.mixed_precision.set_global_policy(args.precision)

    def schedule(epochs: int):  # exactly ferlab.training.train.make_optimizer's learning rate
        total = max(epochs * steps, 1)
        warmup = min(cfg.warmup_epochs * steps, total - 1)
        if cfg.schedule == "constant" and not warmup:
            return cfg.learning_rate
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=cfg.learning_rate * 0.1 if warmup else cfg.learning_rate,
            decay_steps=total - warmup,
            alpha=0.01 if cfg.schedule == "cosine" else 1.0,
            warmup_target=cfg.learning_rate if warmup else None,
            warmup_steps=warmup,
        )

    # The warm-up phase does not depend on the total: epoch 1 runs with a provisional
    # schedule, then the real one replaces it (same optimizer variables, re-jitted step).
    if cfg.optimizer == "sgd":  # as make_optimizer: Nesterov momentum, decoupled weight decay
        optimizer = keras.optimizers.SGD(
            schedule(args.max_epochs), momentum=cfg.momentum, nesterov=True, weight_decay=cfg.weight_decay or None
        )
    elif cfg.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(schedule(args.max_epochs), weight_decay=cfg.weight_decay)
    else:
        optimizer = keras.optimizers.Adam(schedule(args.max_epochs))
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing)

    xt, yt, wt = jnp.asarray(x_train), jnp.asarray(y_train), jnp.asarray(table, jnp.float32)
    base_key = jax.random.key(params.seed)

    def make_step():
        return make_train_step(model, optimizer, loss_fn, aug, xt, yt, wt, base_key)

    @jax.jit
    def predict(tv, ntv, faces):
        with jax.default_matmul_precision("highest"):
            probs, _ = eval_model.stateless_call(tv, ntv, faces.astype(jnp.float32)[..., None] / PIXEL_SCALE, training=False)
        return probs

    xv = jnp.asarray(x_val)
    chunk = 512

    def evaluate(tv, ntv):
        probs = []
        for i in range(0, len(y_val), chunk):
            part = xv[i : i + chunk]
            pad = chunk - part.shape[0]
            if pad:
                part = jnp.concatenate([part, jnp.zeros((pad,) + part.shape[1:], part.dtype)])
            probs.append(predict(tv, ntv, part)[: chunk - pad])
        probs = np.asarray(jnp.concatenate(probs), np.float64)
        onehot = np.eye(7)[y_val]
        smooth = onehot * (1 - cfg.label_smoothing) + cfg.label_smoothing / 7
        val_loss = float(-(smooth * np.log(np.clip(probs, 1e-7, 1 - 1e-7))).sum(1).mean())
        nan_rows = int(np.isnan(probs).any(1).sum())
        if nan_rows:
            print(f"WARNING: {nan_rows} PublicTest faces got NaN probabilities", flush=True)
        return float((probs.argmax(1) == y_val).mean()), val_loss

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    state = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in optimizer.variables],
        jnp.zeros(5, jnp.float32),
    )
    step_fn = make_step()
    history, best, best_epoch, epochs = [], -1.0, 0, args.max_epochs
    average, averaged = None, 0  # running mean of the last cfg.average_epochs epochs' (tv, ntv), as train.py keeps it
    info = {
        "script": "benchmarks/gpu_long_recipe.py",
        "device": device_name,
        "devices": [str(d) for d in jax.devices()],
        "keras": keras.__version__,
        "jax": jax.__version__,
        "model": cfg.model,
        "widths": widths,
        "parameters": int(model.count_params()),
        "recipe": recipe,
        "overrides": args.overrides,
        "max_epochs": args.max_epochs,
        "budget_minutes": args.budget_minutes,
        "train_faces": n,
        "val_faces": int(len(y_val)),
        "steps_per_epoch": steps,
        "class_weights_table": np.asarray(table).tolist(),
    }

    def save_best(tv, ntv):
        for var, value in zip(model.trainable_variables, tv):
            var.assign(np.asarray(value))
        for var, value in zip(model.non_trainable_variables, ntv):
            var.assign(np.asarray(value))
        partial = out / "best.partial.weights.h5"
        model.save_weights(partial)
        partial.replace(out / "best.weights.h5")

    def write_history(**extra):
        info.update(extra, history=history, epochs=epochs, best_epoch=best_epoch, best_val_accuracy=best)
        (out / "history.tmp").write_text(json.dumps(info, indent=1))
        (out / "history.tmp").replace(out / "history.json")

    start = time.monotonic()
    hard_stop = start + 60 * args.budget_minutes + 90
    epoch, stopped = 0, None
    while epoch < epochs:
        epoch += 1
        t0 = time.monotonic()
        order = np.random.default_rng([params.seed, epoch]).permutation(n).astype(np.int32)
        full_steps, marks = n // bs, []
        mark_step = min(10, full_steps // 3)
        for s in range(steps):
            global_step = (epoch - 1) * steps + s
            state = step_fn(state, jnp.asarray(order[s * bs : (s + 1) * bs]), jnp.int32(global_step))
            if epoch == 1 and s in (mark_step, full_steps - 1):  # time full batches only, past compilation
                jax.block_until_ready(state[3])
                marks.append((s, time.monotonic()))
        tv, ntv, ov, sums = state
        sums = np.asarray(sums)  # waits for the epoch's steps
        t_train = time.monotonic()
        val_acc, val_loss = evaluate(tv, ntv)
        if epoch == 1:  # steady-state epoch time without compilation: the steps after the mark + a second evaluation
            t_eval = time.monotonic()
            evaluate(tv, ntv)
            eval_s = time.monotonic() - t_eval
            if len(marks) == 2:
                per_step = (marks[1][1] - marks[0][1]) / (marks[1][0] - marks[0][0])
            else:  # too few steps to leave compilation out
                per_step = (t_train - t0) / steps
            per_epoch = per_step * steps + eval_s
            spent = time.monotonic() - start
            compile_s = max(spent - per_epoch, 0.0)  # the re-jitted step compiles again once
            fits = epochs_fitting(60 * args.budget_minutes - spent - compile_s, per_epoch, 1)
            epochs = max(1, min(args.max_epochs, fits))
            info.update(
                estimated_seconds_per_epoch=round(per_epoch, 3),
                first_epoch_seconds=round(spent, 1),
                compile_seconds_estimate=round(compile_s, 1),
                epochs_fitting_budget=fits,
            )
            print(
                f"epoch 1 took {spent:.1f}s with compilation; steady epoch {per_epoch:.2f}s -> {fits} epochs fit "
                f"{args.budget_minutes} min; running {epochs} epochs (max {args.max_epochs})",
                flush=True,
            )
            if cfg.schedule != "constant":
                optimizer._learning_rate = schedule(epochs)
                step_fn = make_step()
        elif epoch == REFIT_EPOCH and epoch < epochs:
            per_epoch = float(np.mean([r["seconds"] for r in history[2:]] + [time.monotonic() - t0]))  # epoch 2 recompiled
            spent = time.monotonic() - start
            recompile = compile_s if cfg.schedule != "constant" else 0.0
            refit = max(epoch + 1, min(args.max_epochs, epochs_fitting(60 * args.budget_minutes - spent - recompile, per_epoch, epoch)))
            info.update(refit_seconds_per_epoch=round(per_epoch, 3), refit_epochs=refit)
            print(f"epochs 3-{epoch} took {per_epoch:.2f}s each -> running {refit} epochs (was {epochs})", flush=True)
            if refit != epochs:
                epochs = refit
                if cfg.schedule != "constant":
                    optimizer._learning_rate = schedule(epochs)
                    step_fn = make_step()
        lr = cfg.learning_rate if cfg.schedule == "constant" else float(np.asarray(optimizer._learning_rate(epoch * steps)))
        row = {
            "epoch": epoch,
            "loss": float(sums[0] / sums[1]),
            "accuracy": float(sums[2] / sums[3]),
            "accuracy_unweighted": float(sums[4] / sums[1]),
            "val_loss": val_loss,
            "val_accuracy": val_acc,
            "learning_rate": lr,
            "seconds": round(time.monotonic() - t0, 2),
        }
        history.append(row)
        improved = val_acc > best
        if improved:
            best, best_epoch = val_acc, epoch
            save_best(tv, ntv)
        if cfg.average_epochs and epoch > epochs - cfg.average_epochs:
            weights = [np.asarray(v, np.float64) for v in (*tv, *ntv)]
            average = weights if average is None else [a + (w - a) / (averaged + 1) for a, w in zip(average, weights)]
            averaged += 1
        state = (tv, ntv, ov, jnp.zeros(5, jnp.float32))
        write_history()
        print(
            f"epoch {epoch}/{epochs} {row['seconds']:.1f}s loss {row['loss']:.4f} acc {row['accuracy']:.4f} "
            f"(unweighted {row['accuracy_unweighted']:.4f}) val_loss {val_loss:.4f} val_acc {val_acc:.4f} "
            f"lr {lr:.2e}{' *best' if improved else ''}",
            flush=True,
        )
        if not np.isfinite(row["loss"]):
            stopped = f"stopped after epoch {epoch}: the training loss is not finite"
        elif time.monotonic() > hard_stop and epoch < epochs:
            stopped = f"stopped after epoch {epoch} of {epochs}: past the budget + 90 s"
        if stopped:
            print(stopped, flush=True)
            break
    total = time.monotonic() - start
    kept = best
    if averaged:  # the average replaces the best epoch when PublicTest prefers it, as in train.py
        n_tv = len(model.trainable_variables)
        average_tv = [jnp.asarray(a, v.dtype) for a, v in zip(average[:n_tv], model.trainable_variables)]
        average_ntv = [jnp.asarray(a, v.dtype) for a, v in zip(average[n_tv:], model.non_trainable_variables)]
        average_acc, _ = evaluate(average_tv, average_ntv)
        info.update(average_val_accuracy=average_acc, averaged_epochs=averaged if average_acc > best else 0)
        print(f"average of the last {averaged} epochs: PublicTest accuracy {average_acc:.4f} (best epoch {best:.4f})", flush=True)
        if average_acc > best:
            save_best(average_tv, average_ntv)
            kept = average_acc
    eval_model.load_weights(out / "best.weights.h5")  # the file, read back, scores what the kept weights scored
    reloaded, _ = evaluate([v.value for v in eval_model.trainable_variables], [v.value for v in eval_model.non_trainable_variables])
    print(f"best.weights.h5 read back: PublicTest accuracy {reloaded:.4f} (kept: {kept:.4f})", flush=True)
    write_history(
        stopped=stopped,
        train_seconds=round(total, 1),
        reloaded_val_accuracy=reloaded,
        mean_seconds_per_epoch_after_first=round(float(np.mean([r["seconds"] for r in history[1:]])), 3) if len(history) > 1 else None,
    )
    print(
        f"done: {epoch} epochs in {total:.0f}s; best epoch {best_epoch}, PublicTest accuracy {best:.4f}; "
        f"wrote {out / 'best.weights.h5'} and {out / 'history.json'}",
        flush=True,
    )


# ---------------------------------------------------------------- score (here, TensorFlow, MLflow)


def cmd_score(args) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from ferlab import config
    from ferlab.data import arrays as arrays_mod
    from ferlab.lifecycle import tracking
    from ferlab.training import model_io, models
    from ferlab.training.evaluate import evaluate, metrics_of

    weights = Path(args.weights)
    hist = json.loads(Path(args.history or weights.with_name("history.json")).read_text())
    params = config.load(ROOT / "params.yaml")
    recipe = hist["recipe"]
    trained = recipe.get("params")  # older history.json files: the local params.yaml with the recipe's widths
    model_name = recipe.get("model", "ferlab_cnn")
    options = dict(recipe["model_options"] if "model_options" in recipe else {"widths": hist["widths"]})
    if args.widths:
        options["widths"] = [int(w) for w in args.widths.split(",")]
    widths = options.get("widths")
    model = models.build(model_name, **options)
    model.load_weights(weights)
    model_io.save_h5(model, args.model_out)
    model = model_io.load_h5(args.model_out)  # score exactly what was saved
    arrays = arrays_mod.load(ROOT / params.paths.processed / arrays_mod.ARRAY_FILE)

    # the evaluate stage's scoring: every TTA, the temperature fitted on PublicTest's flip views, PrivateTest's ECE
    splits = {key: (arrays.x[key], arrays.y[key].astype(int)) for key in ("val", "test")}
    result = evaluate(model, splits, batch_size=params.evaluate.batch_size, calibrate=params.evaluate.calibrate)
    metrics = metrics_of(result, per_class=("val", "test"))
    recalls = metrics["test"]["per_class_recall"]
    lowest = min(recalls, key=recalls.get)

    run_id = None
    if not args.no_log:
        env = dict(os.environ, DVC_ROOT=str(ROOT), DVC_EXP_NAME=args.run_name)  # the project's store; the run's name
        tracker = tracking.RunTracker(
            args.experiment,
            env=env,
            tags={
                "git_commit": tracking.git_commit(ROOT),
                "model": model_name,
                "dvc_exp": "none (benchmarks/gpu_long_recipe.py)",
                "engine": f"keras-jax on {hist['device']}",
            },
        )
        run_id = tracker.start()
        if trained:
            train_params = trained["train"] | {
                "model_options": options,
                "epochs": hist["epochs"],
                "early_stopping_patience": hist["epochs"],
                "precision": recipe["precision"],
                "deterministic": False,
            }
            train_params["class_weights"] = recipe["class_weights"] != "none"
            flat = config.as_flat_dict({"seed": trained["seed"], "train": train_params, "preprocess": trained["preprocess"]})
        else:
            flat = config.as_flat_dict(
                {
                    "seed": recipe.get("seed", params.seed),
                    "train": dataclasses.asdict(params.train)
                    | {
                        "model_options": {"widths": widths},
                        "epochs": hist["epochs"],
                        "early_stopping_patience": hist["epochs"],
                        "precision": recipe["precision"],
                        "class_weights": recipe["class_weights"] != "none",
                        "deterministic": False,
                    },
                    "preprocess": dataclasses.asdict(params.preprocess) | {"augment": recipe["augment"]},  # as trained
                }
            )
        tracker.log_params(
            flat
            | {
                "train.resolved_precision": recipe["precision"],
                "model.parameters": model.count_params(),
                "engine": f"keras-jax on {hist['device']}",
                "keras": hist["keras"],
                "jax": hist["jax"],
                "budget_minutes": hist["budget_minutes"],
                "max_epochs": hist["max_epochs"],
                "seconds_per_epoch": hist.get("mean_seconds_per_epoch_after_first"),
                "stopped": hist.get("stopped"),
            }
        )
        for row in hist["history"]:
            tracker.log_metrics(
                {k: row[k] for k in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds")}, step=row["epoch"]
            )
        tracker.log_metrics(
            {
                "best_val_accuracy": hist["best_val_accuracy"],
                "best_epoch": hist["best_epoch"],
                "averaged_epochs": hist.get("averaged_epochs", 0),
            }
            | ({"average_val_accuracy": hist["average_val_accuracy"]} if "average_val_accuracy" in hist else {})
        )
        flat_m = {f"eval/{split}_{k}": v for split, m in metrics.items() for k, v in m.items() if not isinstance(v, dict)}
        flat_m |= {f"eval/test_f1_{e}": v for e, v in metrics["test"]["per_class_f1"].items()}
        flat_m |= {f"eval/test_recall_{e}": v for e, v in recalls.items()}
        tracker.log_metrics(flat_m)
        for path in (weights.with_name("history.json"),):
            if path.is_file():
                tracker.log_artifact(path, "train")
        tracker.log_artifact(args.model_out, "model_h5")

    summary = {
        "run_name": args.run_name,
        "mlflow_run_id": run_id,
        "model_h5": str(args.model_out),
        "weights": str(weights),
        "device": hist["device"],
        "widths": widths,
        "parameters": int(model.count_params()),
        "epochs": hist["epochs"],
        "epochs_run": len(hist["history"]),
        "best_epoch": hist["best_epoch"],
        "best_val_accuracy_on_device": hist["best_val_accuracy"],
        "averaged_epochs": hist.get("averaged_epochs", 0),
        "average_val_accuracy_on_device": hist.get("average_val_accuracy"),
        "seconds_per_epoch": hist.get("mean_seconds_per_epoch_after_first"),
        "lowest_test_recall": {lowest: recalls[lowest]},
        "metrics": metrics,
        "report_text": {k: r["report_text"] for k, r in result.results.items() if k in ("val", "test")},
    }
    out = Path(args.summary or weights.with_name("score.json"))
    out.write_text(json.dumps(summary, indent=1))
    print(
        f"\n{args.run_name}: {model_name} {options}, {model.count_params():,} weights, {len(hist['history'])} epochs on "
        f"{hist['device']}, best epoch {hist['best_epoch']}"
    )
    print(f"{'split':12s} {'one view':>9s} {'flip':>8s} {'ten-crop':>9s} {'scale-rotate':>13s} {'macro-F1':>9s}")
    for key, name in (("val", "PublicTest"), ("test", "PrivateTest")):
        print(
            f"{name:12s} {metrics[key]['accuracy']:9.4f} {metrics[key + '_tta_flip']['accuracy']:8.4f} "
            f"{metrics[key + '_tta_ten_crop']['accuracy']:9.4f} {metrics[key + '_tta_scale_rotate']['accuracy']:13.4f} "
            f"{metrics[key]['macro_f1']:9.4f}"
        )
    print("PrivateTest F1:     " + "  ".join(f"{e} {v:.3f}" for e, v in metrics["test"]["per_class_f1"].items()))
    print("PrivateTest recall: " + "  ".join(f"{e} {v:.3f}" for e, v in recalls.items()))
    print(f"lowest recall {lowest} {recalls[lowest]:.3f}; model {args.model_out}; summary {out}; MLflow run {run_id}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="Training + PublicTest faces -> a compact file for the GPU machine")
    p.add_argument("--processed", default=str(ROOT / "data/processed"))
    p.add_argument("--out", default=str(ROOT / ".gpu/fer_train_val.npz"))
    p = sub.add_parser("train", help="train on the GPU machine (KERAS_BACKEND=jax)")
    p.add_argument("--widths", help="ferlab_cnn's widths (default: train.model_options.widths, else 48,96,192,384)")
    p.add_argument("--max-epochs", type=int, default=200)
    p.add_argument("--budget-minutes", type=float, default=7.0, help="training time, compilation included")
    p.add_argument("--data", default=".gpu/fer_train_val.npz")
    p.add_argument("--out", required=True)
    p.add_argument("--params", default=str(ROOT / "params.yaml"), help="the recipe (train, preprocess.augment, seed)")
    p.add_argument("-S", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE", help="as dvc exp run -S")
    p.add_argument("--precision", default="mixed_bfloat16", choices=("mixed_bfloat16", "float32"))
    p.add_argument("--class-weights", choices=("sqrt", "none"), help="default: sqrt if train.class_weights")
    p.add_argument("--limit", type=int, default=0, help="N random faces of each split only (smoke tests)")
    p = sub.add_parser("score", help="score best.weights.h5 here with ferlab's evaluation and log an MLflow run")
    p.add_argument("--weights", required=True)
    p.add_argument("--history", help="history.json (default: next to --weights)")
    p.add_argument("--widths", help="default: from history.json")
    p.add_argument("--model-out", default="/tmp/ferlab_gpu_long.h5")
    p.add_argument("--summary", help="JSON summary (default: score.json next to --weights)")
    p.add_argument("--run-name", default="gpu-long")
    p.add_argument("--experiment", default="ferlab")
    p.add_argument("--no-log", action="store_true", help="do not log an MLflow run")
    args = parser.parse_args()
    {"pack": cmd_pack, "train": cmd_train, "score": cmd_score}[args.command](args)


if __name__ == "__main__":
    main()
