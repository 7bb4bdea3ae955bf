"""The one optimiser registry: a name and a learning rate (or schedule) -> an optax transformation.

Every experiment takes its optimisers from `create`; what differs between
experiments (Adam's betas in the GAN, AdamW's decay mask in the transformer,
gradient clipping) is passed as options, so the same name always means the
same optax function::

  create("fromage", 0.01)                              # fromage_optax.fromage(0.01)
  create("adam", 1e-4, b1=0.0)                         # optax.adam(1e-4, b1=0.0)
  create("sgd", 0.1, momentum=0.9, clip_norm=1.0)      # clip_by_global_norm(1), then SGD
  create("fromage_adamw", 0.03, adamw_learning_rate=3e-3)  # Fromage on kernels, AdamW on the rest

`make_optimizer` adds what the experiments' train steps need: the relative
trust monitor last (``fromage_optax.monitor_relative_trust``: how far each step
moved each layer) and, with ``injectable=True``, the learning rate in the state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
import optax.contrib

import fromage_optax


def _clipped(optimizer, clip_norm):
    if clip_norm is None:
        return optimizer
    return optax.chain(optax.clip_by_global_norm(clip_norm), optimizer)


def sgd(learning_rate, *, momentum=None, clip_norm=None):
    """``optax.sgd``, optionally after ``clip_by_global_norm(clip_norm)``."""
    return _clipped(optax.sgd(learning_rate, momentum=momentum), clip_norm)


def adam(learning_rate, *, b1=0.9, b2=0.999):
    """``optax.adam``."""
    return optax.adam(learning_rate, b1=b1, b2=b2)


def adamw(learning_rate, *, b2=0.999, weight_decay=1e-4, mask=None, clip_norm=None):
    """``optax.adamw`` (decay on the leaves `mask` selects), optionally after clipping."""
    return _clipped(
        optax.adamw(learning_rate, b2=b2, weight_decay=weight_decay, mask=mask), clip_norm
    )


def lars(learning_rate):
    """``optax.lars``."""
    return optax.lars(learning_rate)


def fromage(learning_rate, *, p_bound=None, layer_axes=None, momentum=None):
    """``fromage_optax.fromage``; with `momentum` β, along ``optax.trace(β)`` (a variant)."""
    optimizer = fromage_optax.fromage(learning_rate, p_bound, layer_axes=layer_axes)
    if momentum is not None:
        optimizer = optax.chain(optax.trace(decay=momentum), optimizer)
    return optimizer


def fromage_adamw(
    learning_rate,
    *,
    adamw_learning_rate,
    fromage_mask=None,
    p_bound=None,
    layer_axes=None,
    momentum=None,
    b2=0.999,
    weight_decay=0.0,
    weight_decay_mask=None,
):
    """``fromage_optax.fromage_with_adamw``: Fromage on the masked kernels, AdamW on the rest."""
    return fromage_optax.fromage_with_adamw(
        learning_rate,
        adamw_learning_rate,
        fromage_mask=fromage_mask,
        p_bound=p_bound,
        layer_axes=layer_axes,
        momentum=momentum,
        b2=b2,
        weight_decay=weight_decay,
        weight_decay_mask=weight_decay_mask,
    )


def muon(
    learning_rate,
    *,
    adam_learning_rate,
    muon_mask,
    adam_b2=0.999,
    adam_weight_decay=0.0,
):
    """``optax.contrib.muon`` as its authors set it up: Muon on hidden matrices, AdamW elsewhere.

    `muon_mask` (a function of the params) selects the leaves Muon updates
    (the blocks' Dense kernels; a stacked ``[layers, in, out]`` kernel is
    orthogonalised per layer); AdamW, at `adam_learning_rate`, updates the rest
    (embeddings, LayerNorm parameters, biases) with decoupled decay
    `adam_weight_decay`. Nesterov momentum 0.95 (Nesterov in the AdamW part
    too) and 5 Newton–Schulz steps are optax's defaults.
    """
    from optax.contrib import MuonDimensionNumbers

    def dimension_numbers(params):
        def spec(chosen, leaf):
            if not chosen:
                return None
            if leaf.ndim == 2:
                return MuonDimensionNumbers()
            if leaf.ndim == 3:  # [layers, in, out] of nn.scan
                return MuonDimensionNumbers(reduction_axis=1, output_axis=2)
            raise ValueError(
                f"muon_mask selects a leaf of shape {leaf.shape}: Muon needs matrices "
                "[in, out] or stacks [layers, in, out]; leave it to AdamW."
            )

        return jax.tree.map(spec, muon_mask(params), params)

    return optax.contrib.muon(
        learning_rate,
        adam_learning_rate=adam_learning_rate,
        adam_b2=adam_b2,
        adam_weight_decay=adam_weight_decay,
        muon_weight_dimension_numbers=dimension_numbers,
    )


def optax_fromage(learning_rate):
    """``optax.fromage`` (its norms clamped at 1e-6)."""
    return optax.fromage(learning_rate)


OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "sgd": sgd,
    "adam": adam,
    "adamw": adamw,
    "lars": lars,
    "fromage": fromage,
    "fromage_adamw": fromage_adamw,
    "optax_fromage": optax_fromage,
    "muon": muon,
}
LABELS = {
    "sgd": "optax.sgd",
    "adam": "optax.adam",
    "adamw": "optax.adamw",
    "lars": "optax.lars",
    "fromage": "fromage_optax.fromage",
    "fromage_adamw": "fromage_optax.fromage_with_adamw",
    "optax_fromage": "optax.fromage",
    "muon": "optax.contrib.muon",
}


def check_name(name: str) -> str:
    """`name` if the registry has it; else a ValueError listing the names."""
    if name not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {name!r}; choose from {tuple(OPTIMIZERS)}.")
    return name


def create(name: str, learning_rate: optax.ScalarOrSchedule, **options: Any):
    """The optimiser called `name` at `learning_rate` (a float or an optax schedule)."""
    return OPTIMIZERS[check_name(name)](learning_rate, **options)


def is_weight_matrix(params):
    """Mask selecting the weight matrices (ndim ≥ 2), the 'layers' of deep relative trust."""
    return jax.tree.map(lambda leaf: jnp.ndim(leaf) >= 2, params)


def with_monitor(optimizer, *, mask=is_weight_matrix, layer_axes=None):
    """`optimizer`, then ``monitor_relative_trust`` over the leaves `mask` selects."""
    monitor = fromage_optax.monitor_relative_trust(mask=mask, layer_axes=layer_axes)
    return optax.chain(optimizer, monitor)


def make_optimizer(
    name: str,
    learning_rate: optax.ScalarOrSchedule,
    *,
    monitor: bool = True,
    injectable: bool = False,
    monitor_mask: Any = is_weight_matrix,
    monitor_layer_axes: Any = None,
    **options: Any,
) -> optax.GradientTransformation:
    """`create` (with `options`), optionally monitored and with an injectable learning rate.

    Args:
      name: a name of `OPTIMIZERS`.
      learning_rate: the (initial) learning rate, or a schedule.
      monitor: chain ``monitor_relative_trust`` (over `monitor_mask`, per layer
        along `monitor_layer_axes`) last, so the step can report ‖ΔW‖/‖W‖ and the deep
        relative trust (`relative_trust`).
      injectable: wrap in ``optax.inject_hyperparams`` so the learning rate lives
        in the state (see `with_learning_rate`): one compiled step then serves
        every learning rate, e.g. decayed between epochs or vmapped over.
      monitor_mask, monitor_layer_axes: the monitor's ``mask`` and ``layer_axes``.
      **options: the optimiser's own options, e.g. ``momentum=0.9`` for "sgd".
    """
    check_name(name)

    def build(learning_rate):
        optimizer = create(name, learning_rate, **options)
        if monitor:
            optimizer = with_monitor(optimizer, mask=monitor_mask, layer_axes=monitor_layer_axes)
        return optimizer

    if injectable:
        return optax.inject_hyperparams(build)(learning_rate=learning_rate)
    return build(learning_rate)


def with_learning_rate(opt_state, learning_rate):
    """`opt_state` of an `injectable` optimiser with its learning rate replaced."""
    hyperparams = dict(opt_state.hyperparams)
    old = hyperparams["learning_rate"]
    hyperparams["learning_rate"] = jnp.broadcast_to(
        jnp.asarray(learning_rate, old.dtype), old.shape
    )
    return opt_state._replace(hyperparams=hyperparams)


def relative_trust(opt_state) -> dict:
    """The relative trust metrics of the latest step if the optimiser has a monitor, else {}."""
    try:
        return fromage_optax.relative_trust_metrics(opt_state)
    except ValueError:
        return {}


def warmup_cosine(peak: float, warmup_steps: int, steps: int) -> optax.Schedule:
    """Linear warm-up to `peak`, then cosine decay to peak/10 at `steps` (as nanoGPT)."""
    return optax.warmup_cosine_decay_schedule(
        0.0, peak, warmup_steps, max(steps, warmup_steps + 1), end_value=peak / 10
    )
