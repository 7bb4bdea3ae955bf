"""The Fromage paper's GAN experiment: a class-conditional GAN trained with Fromage, Adam and SGD.

Protocol (Bernstein et al., 2020; their GAN was a class-conditional GAN on
CIFAR-10 scored by FID): the same optimiser and learning rate for the
generator and the discriminator; Adam with betas (0, 0.999); the learning rate
divided by 10 near the end (here after ``lr_decay_at`` of the steps, rounded to a
multiple of ``eval_every``);
batch 256; the authors' tuned rates were Fromage 0.01, Adam 1e-4, SGD 0.01.
Optimisers: ``fromage`` (`fromage_optax.fromage`), ``adam``
(``optax.adam(b1=0, b2=0.999)``), ``sgd`` (plain ``optax.sgd``) and
``optax_fromage`` (``optax.fromage``).

Two phases per optimiser:

1. **grid**: the learning rates ``best × lr_factors`` (default ×⅓, ×1, ×3 around
   the authors' best), one seed (``seeds[0]``);
2. **seeds**: every seed in ``seeds`` at the grid's best rate (lowest final
   Fréchet distance). The grid's run of ``seeds[0]`` is trained again here so
   that both phases have the same number of models and reuse one compiled step.

The models of one phase are stacked and ``jax.vmap``-ed, the learning rate lives
in the optimiser state (``optax.inject_hyperparams``), and every
``eval_every`` steps run as one jitted ``lax.scan``: each optimiser compiles its
train step once.

Score (`benchmarks.frechet`): the Fréchet distance between Gaussians fitted to
the features of the real training images and of ``eval_samples_per_class``
generated images of each class (fixed latents), in the last hidden layer of a
classifier trained on the same data (seeded, cached in ``--out``); and that
classifier's accuracy on generated images of each requested class (does the
conditioning work?). The models are the MLP generator and projection
discriminator of `benchmarks.models.gan`, trained with the hinge loss.

  python -m benchmarks.gan --preset quick   # seconds (tests)
  python -m benchmarks.gan --preset cpu     # scikit-learn's 8×8 digits, 2 CPU cores
  python -m benchmarks.gan --preset gpu --data-dir ~/mnist   # MNIST IDX files, GPU/TPU

Writes ``gan.json`` (every run's score over training), ``gan.md`` (the table),
``gan.png`` (Fréchet distance over training at each optimiser's best rate, mean
over seeds), ``gan_accuracy.png`` (the same for the classifier's accuracy on
generated images) and ``samples_<optimizer>.png`` (rows: classes) into ``--out``.
"""

from __future__ import annotations

import argparse
import functools
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import fromage_optax
from benchmarks import data as data_lib
from benchmarks import frechet, optimizers, reporting, training
from benchmarks.models import gan as gan_models

OPTIMIZER_NAMES = ("fromage", "adam", "sgd", "optax_fromage")
# The authors' best learning rates for their GAN after tuning.
PAPER_BEST_LEARNING_RATES = {"fromage": 0.01, "adam": 1e-4, "sgd": 0.01, "optax_fromage": 0.01}
OPTIMIZER_LABELS = {
    "fromage": "fromage_optax.fromage",
    "adam": "Adam (0, 0.999)",
    "sgd": "SGD",
    "optax_fromage": "optax.fromage",
}

PRESETS = {
    "quick": {
        "dataset": "digits",
        "steps": 20,
        "eval_every": 10,
        "batch_size": 64,
        "latent_size": 8,
        "generator_hidden": (32,),
        "discriminator_hidden": (32,),
        "lr_factors": (1.0, 3.0),
        "seeds": (0, 1),
        "classifier_hidden": (32,),
        "classifier_epochs": 10,
        "eval_samples_per_class": 16,
    },
    # scikit-learn's digits on 2 busy CPU cores: 1,000 steps of 3 stacked models (and two
    # scores) took 8.3-8.8 s at load average 2.6-3.6, so 8 phases (4 optimisers x grid and
    # seeds) x 16,000 steps take about 18-19 minutes, plus a few seconds of compilation
    # per optimiser and for the classifier. The grid goes up to 10x the authors' best
    # because a 1,000-step pilot put Fromage's and SGD's best at the top of x1/3..x3.
    # Measured with that grid on the quiet machine: 17 minutes (docs/results/gan/).
    "cpu": {
        "dataset": "digits",
        "steps": 16_000,
        "eval_every": 500,
        "batch_size": 256,
        "latent_size": 32,
        "generator_hidden": (128, 128),
        "discriminator_hidden": (128, 128),
        "lr_factors": (1 / 3, 1.0, 3.0, 10.0),
        "seeds": (0, 1, 2),
        "classifier_hidden": (128, 64),
        "classifier_epochs": 40,
        "eval_samples_per_class": 144,
    },
    # Full MNIST from IDX files: 30,000 steps of batch 256 are 128 epochs.
    "gpu": {
        "dataset": "mnist",
        "steps": 30_000,
        "eval_every": 1000,
        "batch_size": 256,
        "latent_size": 64,
        "generator_hidden": (512, 512, 512),
        "discriminator_hidden": (512, 512, 512),
        "lr_factors": (1 / 3, 1.0, 3.0),
        "seeds": (0, 1, 2),
        "classifier_hidden": (256, 128),
        "classifier_epochs": 10,
        "eval_samples_per_class": 1000,
    },
}
DEFAULTS = {"optimizers": OPTIMIZER_NAMES, "lr_decay_at": 0.9, "classifier_seed": 0}
SAMPLES_PER_CLASS_IN_GRID = 8


def base_optimizer(name: str, learning_rate) -> optax.GradientTransformation:
    """The optimiser called `name` (one of `OPTIMIZER_NAMES`) as the paper's GAN runs used it."""
    if name == "fromage":
        return fromage_optax.fromage(learning_rate)
    if name == "adam":
        return optax.adam(learning_rate, b1=0.0, b2=0.999)
    if name == "sgd":
        return optax.sgd(learning_rate)
    if name == "optax_fromage":
        return optax.fromage(learning_rate)
    raise ValueError(f"Unknown optimizer {name!r}; choose from {OPTIMIZER_NAMES}.")


def make_optimizer(name: str, learning_rate: float) -> optax.GradientTransformation:
    """`base_optimizer` with its learning rate in the state (see `training.with_learning_rate`)."""
    return optax.inject_hyperparams(functools.partial(base_optimizer, name))(
        learning_rate=learning_rate
    )


def learning_rate_grid(name: str, factors) -> list[float]:
    """The authors' best rate for `name` times each of `factors`, to 3 significant digits."""
    return [float(f"{PAPER_BEST_LEARNING_RATES[name] * factor:.3g}") for factor in factors]


def _tuple_of(kind):
    def parse(text: str):
        return tuple(kind(item) for item in text.split(","))

    return parse


def _optimizer_list(text: str) -> tuple[str, ...]:
    names = tuple(item.strip() for item in text.split(","))
    unknown = [name for name in names if name not in OPTIMIZER_NAMES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown optimizer(s) {unknown}; choose from {OPTIMIZER_NAMES}"
        )
    return names


_OVERRIDES = {
    "optimizers": (_optimizer_list, "e.g. fromage,adam"),
    "seeds": (_tuple_of(int), "e.g. 0,1,2 (the first also runs the lr grid)"),
    "lr_factors": (_tuple_of(float), "multiples of the authors' best lr, e.g. 0.333,1,3"),
    "steps": (int, "train steps per run"),
    "eval_every": (int, "steps between scores"),
    "batch_size": (int, None),
    "lr_decay_at": (float, "fraction of the steps after which the lr is divided by 10"),
    "dataset": (str, f"one of {data_lib.DATASET_NAMES}"),
    "classifier_epochs": (int, None),
    "eval_samples_per_class": (int, "generated images per class for each score"),
}


def parse_args(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    for key, (kind, help_text) in _OVERRIDES.items():
        parser.add_argument("--" + key.replace("_", "-"), type=kind, help=help_text)
    parser.add_argument("--data-dir", help="folder of the four MNIST IDX files (preset gpu)")
    parser.add_argument("--out", default="runs/gan")
    args = parser.parse_args(argv)
    config = {**DEFAULTS, **PRESETS[args.preset], "preset": args.preset}
    for key in _OVERRIDES:
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    if config["dataset"] not in data_lib.DATASET_NAMES:
        parser.error(f"--dataset must be one of {data_lib.DATASET_NAMES}")
    if config["steps"] % config["eval_every"]:
        parser.error("--steps must be a multiple of --eval-every")
    config.update(data_dir=args.data_dir, out=args.out)
    return config


def unit_range_images(dataset: data_lib.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Train and test images mapped affinely to [−1, 1] (the generator's tanh range).

    The loaders standardise pixels with one mean and scale, so this is the raw
    pixel scale again, from the training images' minimum and maximum.
    """
    low, high = dataset.train_images.min(), dataset.train_images.max()
    scale = (high - low) or 1.0
    train = 2.0 * (dataset.train_images - low) / scale - 1.0
    test = np.clip(2.0 * (dataset.test_images - low) / scale - 1.0, -1.0, 1.0)
    return train.astype(np.float32), test.astype(np.float32)


class Experiment:
    """The data, the networks, the scorer and the compiled functions shared by all runs."""

    def __init__(self, config, dataset: data_lib.Dataset):
        self.config = config
        self.num_classes = dataset.num_classes
        train_images, test_images = unit_range_images(dataset)
        self.num_pixels = train_images.shape[1]
        self.image_side = math.isqrt(self.num_pixels)
        self.train_data = jax.device_put({"image": train_images, "label": dataset.train_labels})
        self.num_train = len(train_images)

        self.classifier, self.classifier_params, self.classifier_info = (
            frechet.train_feature_classifier(
                dataset.name,
                train_images,
                dataset.train_labels,
                test_images,
                dataset.test_labels,
                num_classes=self.num_classes,
                hidden_sizes=config["classifier_hidden"],
                epochs=config["classifier_epochs"],
                seed=config["classifier_seed"],
                cache_dir=config["out"],
            )
        )
        self.real_features = np.asarray(self._features(train_images))
        # Two sets of real images: the distance a perfect generator would roughly reach.
        self.real_test_frechet_distance = frechet.frechet_distance(
            self.real_features, np.asarray(self._features(test_images))
        )

        self.generator = gan_models.Generator(
            tuple(config["generator_hidden"]), self.num_pixels, self.num_classes
        )
        self.discriminator = gan_models.Discriminator(
            tuple(config["discriminator_hidden"]), self.num_classes
        )
        per_class = config["eval_samples_per_class"]
        self.eval_labels = jnp.repeat(jnp.arange(self.num_classes, dtype=jnp.int32), per_class)
        # The same latents for every model and every score, so curves are comparable.
        self.eval_latents = jax.random.normal(
            jax.random.key(12345), (len(self.eval_labels), config["latent_size"])
        )
        self._score_features = jax.jit(jax.vmap(self._generated_features))
        self._chunk_fns: dict = {}
        # The networks' (vmapped) init compiles once for every optimiser and phase.
        self._init_params = jax.jit(
            jax.vmap(
                lambda key_data: gan_models.init_gan_params(
                    self.generator,
                    self.discriminator,
                    jax.random.wrap_key_data(key_data),
                    latent_size=config["latent_size"],
                )
            )
        )

    def _features(self, images):
        _, features = self.classifier.apply({"params": self.classifier_params}, images)
        return features

    def _generated_features(self, generator_params):
        images = self.generator.apply(
            {"params": generator_params}, self.eval_latents, self.eval_labels
        )
        logits, features = self.classifier.apply({"params": self.classifier_params}, images)
        return features, jnp.argmax(logits, -1)

    def chunk_fn(self, optimizer_name: str):
        """Jitted ``(state, data, indices) -> (state, metrics)``: `eval_every` vmapped steps."""
        if optimizer_name not in self._chunk_fns:
            step = gan_models.make_train_step(
                self.generator,
                self.discriminator,
                make_optimizer(optimizer_name, PAPER_BEST_LEARNING_RATES[optimizer_name]),
                latent_size=self.config["latent_size"],
            )
            self._chunk_fns[optimizer_name] = training.make_epoch_fn(jax.vmap(step))
        return self._chunk_fns[optimizer_name]

    def init_states(self, optimizer, seeds) -> gan_models.GANState:
        """`gan_models.init_gan_state` of every seed, stacked on a leading axis."""
        keys = jnp.stack([jax.random.key_data(jax.random.key(seed)) for seed in seeds])
        generator_params, discriminator_params, run_keys = self._init_params(keys)
        init = jax.jit(jax.vmap(optimizer.init))
        return gan_models.GANState(
            generator_params=generator_params,
            discriminator_params=discriminator_params,
            generator_opt_state=init(generator_params),
            discriminator_opt_state=init(discriminator_params),
            key=run_keys,
            step=jnp.zeros((len(seeds),), jnp.int32),
        )

    def score(self, generator_params) -> list[dict]:
        """Fréchet distance and per-class accuracy of the generated images, one dict per model."""
        features, predictions = self._score_features(generator_params)
        features, predictions = np.asarray(features), np.asarray(predictions)
        labels = np.asarray(self.eval_labels)
        scores = []
        for model_features, model_predictions in zip(features, predictions, strict=True):
            correct = model_predictions == labels
            per_class = [float(correct[labels == c].mean()) for c in range(self.num_classes)]
            if np.all(np.isfinite(model_features)):
                distance = frechet.frechet_distance(self.real_features, model_features)
            else:
                distance = float("nan")
            scores.append(
                {
                    "frechet_distance": distance,
                    "generated_accuracy": float(np.mean(per_class)),
                    "accuracy_per_class": per_class,
                }
            )
        return scores

    def sample_grid(self, generator_params) -> np.ndarray:
        """(num_classes, SAMPLES_PER_CLASS_IN_GRID, side, side) images in [−1, 1]."""
        count = SAMPLES_PER_CLASS_IN_GRID
        labels = jnp.repeat(jnp.arange(self.num_classes, dtype=jnp.int32), count)
        latents = jax.random.normal(
            jax.random.key(54321), (len(labels), self.config["latent_size"])
        )
        images = self.generator.apply({"params": generator_params}, latents, labels)
        side = self.image_side
        return np.asarray(images).reshape(self.num_classes, count, side, side)


def learning_rate_decay_step(config) -> int:
    """The step from which the learning rate is divided by 10: ``lr_decay_at`` of the way,
    rounded to a multiple of ``eval_every`` (the rate changes between jitted chunks)."""
    eval_every = config["eval_every"]
    return int(round(config["lr_decay_at"] * config["steps"] / eval_every)) * eval_every


def _set_learning_rates(state: gan_models.GANState, learning_rates) -> gan_models.GANState:
    return state._replace(
        generator_opt_state=optimizers.with_learning_rate(
            state.generator_opt_state, learning_rates
        ),
        discriminator_opt_state=optimizers.with_learning_rate(
            state.discriminator_opt_state, learning_rates
        ),
    )


def train_models(
    experiment: Experiment,
    optimizer_name: str,
    learning_rates,
    seeds,
    *,
    phase: str,
    on_chunk=None,
) -> list[dict]:
    """Trains one GAN per (learning rate, seed) pair, all stacked together; one run dict each."""
    config = experiment.config
    learning_rates = np.asarray(learning_rates, np.float32)
    optimizer = make_optimizer(optimizer_name, PAPER_BEST_LEARNING_RATES[optimizer_name])
    state = experiment.init_states(optimizer, seeds)
    run_chunk = experiment.chunk_fn(optimizer_name)

    # Models of one seed see the same batches whatever their learning rate.
    rngs = {seed: np.random.default_rng(seed) for seed in seeds}
    eval_every, batch_size = config["eval_every"], config["batch_size"]
    decay_step = learning_rate_decay_step(config)

    history: dict = {"step": [0], "scores": [experiment.score(state.generator_params)]}
    chunk_metrics: dict = {}
    start = time.perf_counter()
    for chunk_start in range(0, config["steps"], eval_every):
        factor = 0.1 if chunk_start >= decay_step else 1.0
        state = _set_learning_rates(state, learning_rates * np.float32(factor))
        per_seed = {
            seed: rng.integers(0, experiment.num_train, (eval_every, batch_size))
            for seed, rng in rngs.items()
        }
        indices = np.stack([per_seed[seed] for seed in seeds], axis=1).astype(np.int32)
        state, metrics = run_chunk(state, experiment.train_data, indices)
        for key, value in metrics.items():
            chunk_metrics.setdefault(key, []).append(np.asarray(value, np.float64).mean(axis=0))
        # The rates the chunk actually trained with, read back from the optimiser state.
        chunk_metrics.setdefault("learning_rate", []).append(
            np.asarray(state.discriminator_opt_state.hyperparams["learning_rate"], np.float64)
        )
        history["step"].append(chunk_start + eval_every)
        history["scores"].append(experiment.score(state.generator_params))
        if on_chunk is not None:
            on_chunk({key: float(np.nanmean(values[-1])) for key, values in chunk_metrics.items()})
    wall_seconds = time.perf_counter() - start

    runs = []
    for index, (lr, seed) in enumerate(zip(learning_rates, seeds, strict=True)):
        scores = [chunk[index] for chunk in history["scores"]]
        params = jax.tree.map(lambda leaf, i=index: leaf[i], state.generator_params)
        runs.append(
            {
                "optimizer": optimizer_name,
                "phase": phase,
                "learning_rate": float(f"{lr:.6g}"),
                "seed": int(seed),
                "steps": list(history["step"]),
                "frechet_distance_per_eval": [s["frechet_distance"] for s in scores],
                "generated_accuracy_per_eval": [s["generated_accuracy"] for s in scores],
                "frechet_distance": scores[-1]["frechet_distance"],
                "generated_accuracy": scores[-1]["generated_accuracy"],
                "accuracy_per_class": scores[-1]["accuracy_per_class"],
                # Means over each chunk of eval_every steps (one fewer than the scores).
                **{
                    f"{key}_per_chunk": [float(v[index]) for v in vals]
                    for key, vals in chunk_metrics.items()
                },
                # The models of one phase train together: this is the whole phase's time.
                "phase_wall_seconds": wall_seconds,
                "phase_models": len(seeds),
                "_sample_grid": experiment.sample_grid(params),
            }
        )
    return runs


def _finite_or_inf(value: float) -> float:
    value = float(value)
    return value if math.isfinite(value) else math.inf


def best_learning_rate(grid_runs: list[dict]) -> float:
    """The grid's learning rate with the lowest final Fréchet distance (diverged runs last)."""
    return min(grid_runs, key=lambda run: _finite_or_inf(run["frechet_distance"]))["learning_rate"]


def _mean_std(values) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def summarize(runs: list[dict], optimizers) -> list[dict]:
    """One summary per optimiser: best lr, and the mean ± std over seeds at that lr."""
    summaries = []
    for name in optimizers:
        grid = [r for r in runs if r["optimizer"] == name and r["phase"] == "grid"]
        seeded = [r for r in runs if r["optimizer"] == name and r["phase"] == "seeds"]
        if not seeded:
            continue
        distance_mean, distance_std = _mean_std([r["frechet_distance"] for r in seeded])
        accuracy_mean, accuracy_std = _mean_std([r["generated_accuracy"] for r in seeded])
        per_class = np.mean([r["accuracy_per_class"] for r in seeded], axis=0)
        summaries.append(
            {
                "optimizer": name,
                "learning_rate": seeded[0]["learning_rate"],
                "seeds": [r["seed"] for r in seeded],
                "frechet_distance_mean": distance_mean,
                "frechet_distance_std": distance_std,
                "generated_accuracy_mean": accuracy_mean,
                "generated_accuracy_std": accuracy_std,
                "accuracy_per_class_mean": per_class.tolist(),
                "grid_frechet_distance": {
                    f"{r['learning_rate']:g}": r["frechet_distance"] for r in grid
                },
            }
        )
    return summaries


def fromage_versus_adam(summaries: list[dict]) -> dict | None:
    """Is Fromage's mean distance within one std of Adam's, or lower? (None without both.)"""
    by_name = {s["optimizer"]: s for s in summaries}
    if "fromage" not in by_name or "adam" not in by_name:
        return None
    fromage, adam = by_name["fromage"], by_name["adam"]
    margin = fromage["frechet_distance_mean"] - adam["frechet_distance_mean"]
    return {
        "fromage_minus_adam": margin,
        "adam_std": adam["frechet_distance_std"],
        "fromage_within_one_std_or_better": bool(margin <= adam["frechet_distance_std"]),
    }


def results_table(summaries: list[dict]) -> list[dict]:
    rows = []
    for s in summaries:
        rows.append(
            {
                "optimizer": OPTIMIZER_LABELS[s["optimizer"]],
                "best lr": f"{s['learning_rate']:g}",
                "Fréchet distance ↓": (
                    f"{s['frechet_distance_mean']:.3g} ± {s['frechet_distance_std']:.2g}"
                ),
                "accuracy on generated ↑": (
                    f"{s['generated_accuracy_mean']:.3f} ± {s['generated_accuracy_std']:.3f}"
                ),
                "seeds": len(s["seeds"]),
                "grid (lr: distance, seed 0)": ", ".join(
                    f"{lr}: {d:.3g}" for lr, d in s["grid_frechet_distance"].items()
                ),
            }
        )
    return rows


def write_sample_grid(path, grid: np.ndarray, title: str) -> Path:
    """PNG of `grid` (rows: classes, columns: samples) in grey levels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    num_classes, count, side, _ = grid.shape
    canvas = -np.ones((num_classes * (side + 1) - 1, count * (side + 1) - 1))
    for row in range(num_classes):
        for column in range(count):
            top, left = row * (side + 1), column * (side + 1)
            canvas[top : top + side, left : left + side] = grid[row, column]
    canvas = np.nan_to_num(canvas, nan=1.0)
    fig, ax = plt.subplots(figsize=(count * 0.45 + 0.6, num_classes * 0.45 + 0.6), dpi=100)
    ax.imshow(canvas, cmap="gray_r", vmin=-1, vmax=1, interpolation="nearest")
    ax.set_yticks([r * (side + 1) + side / 2 for r in range(num_classes)])
    ax.set_yticklabels(range(num_classes), fontsize=7)
    ax.set_xticks([])
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_outputs(config, experiment_info: dict, runs: list[dict], *, finished: bool) -> dict:
    """Writes gan.json and gan.md (and, once finished, the plots); returns the summary."""
    out = Path(config["out"])
    summaries = summarize(runs, config["optimizers"])
    comparison = fromage_versus_adam(summaries)
    public_runs = [{k: v for k, v in r.items() if not k.startswith("_")} for r in runs]
    reporting.write_json(
        out / "gan.json",
        {
            "config": config,
            "finished": finished,
            **experiment_info,
            "summary": summaries,
            "fromage_versus_adam": comparison,
            "runs": public_runs,
        },
    )
    rows = results_table(summaries)
    (out / "gan.md").write_text(reporting.format_markdown_table(rows) + "\n")
    if finished:
        write_plots(config, runs, summaries)
    return {"rows": rows, "summary": summaries, "fromage_versus_adam": comparison}


def write_plots(config, runs: list[dict], summaries: list[dict]) -> None:
    out = Path(config["out"])
    distance_series, accuracy_series = {}, {}
    for s in summaries:
        seeded = [r for r in runs if r["optimizer"] == s["optimizer"] and r["phase"] == "seeds"]
        label = f"{OPTIMIZER_LABELS[s['optimizer']]}, lr {s['learning_rate']:g}"
        steps = seeded[0]["steps"]
        distance_series[label] = (
            steps,
            np.mean([r["frechet_distance_per_eval"] for r in seeded], axis=0),
        )
        accuracy_series[label] = (
            steps,
            np.mean([r["generated_accuracy_per_eval"] for r in seeded], axis=0),
        )
        write_sample_grid(
            out / f"samples_{s['optimizer']}.png",
            seeded[0]["_sample_grid"],
            f"{label}, seed {seeded[0]['seed']} (rows: classes)",
        )
    title = (
        f"{config['dataset']}, batch {config['batch_size']}, mean of {len(config['seeds'])} seeds"
    )
    reporting.line_plot(
        out / "gan.png",
        distance_series,
        xlabel="step",
        ylabel="Fréchet distance (classifier features)",
        title=title,
        logy=True,
    )
    reporting.line_plot(
        out / "gan_accuracy.png",
        accuracy_series,
        xlabel="step",
        ylabel="classifier accuracy on generated images",
        title=title,
    )


def main(argv=None) -> dict:
    config = parse_args(argv)
    dataset = data_lib.load_dataset(config["dataset"], data_dir=config["data_dir"])
    start = time.perf_counter()
    experiment = Experiment(config, dataset)
    info = {
        "classifier": experiment.classifier_info,
        "real_test_frechet_distance": experiment.real_test_frechet_distance,
        "lr_decay_step": learning_rate_decay_step(config),
        "platform": jax.devices()[0].platform,
    }
    print(
        f"class-conditional GAN on {dataset.name} ({experiment.num_train} train images), "
        f"{config['steps']} steps of batch {config['batch_size']}, lr/10 after "
        f"{config['lr_decay_at']:.0%}, optimizers {list(config['optimizers'])}, seeds "
        f"{list(config['seeds'])}; feature classifier test accuracy "
        f"{experiment.classifier_info['test_accuracy']:.3f}"
        f"{' (cached)' if experiment.classifier_info['cached'] else ''}, real train vs test "
        f"Fréchet distance {experiment.real_test_frechet_distance:.3g}; {info['platform']}",
        flush=True,
    )
    seeds = tuple(config["seeds"])
    chunks = config["steps"] // config["eval_every"]
    bar = reporting.progress(total=2 * len(config["optimizers"]) * chunks, desc="GAN")
    runs: list[dict] = []

    for name in config["optimizers"]:

        def on_chunk(means, name=name):
            bar.update()
            bar.set_postfix_str(
                f"{name} D {means['discriminator_loss']:.3f} G {means['generator_loss']:.3f}"
            )

        grid = learning_rate_grid(name, config["lr_factors"])
        runs += train_models(
            experiment, name, grid, [seeds[0]] * len(grid), phase="grid", on_chunk=on_chunk
        )
        best = best_learning_rate([r for r in runs if r["optimizer"] == name])
        runs += train_models(
            experiment, name, [best] * len(seeds), seeds, phase="seeds", on_chunk=on_chunk
        )
        # Rewritten after every optimiser, so an interrupted run keeps what it finished.
        write_outputs(config, info, runs, finished=False)
    bar.close()
    info["total_seconds"] = time.perf_counter() - start
    result = write_outputs(config, info, runs, finished=True)
    print(reporting.format_table(result["rows"]))
    if result["fromage_versus_adam"] is not None:
        print(f"Fromage vs Adam: {result['fromage_versus_adam']}")
    print(
        f"total {info['total_seconds']:.0f} s; wrote gan.json, gan.md, gan.png, gan_accuracy.png, "
        f"samples_*.png to {config['out']}"
    )
    return result


if __name__ == "__main__":
    main()
