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

Modules: `configs` (presets, the protocol's optimisers and rates), `step` (the
pure GAN step), `train` (the scorer, the stacked runs of one phase), `report`
(best rates, summaries, the table and plots), ``__main__`` (the command line).
"""
