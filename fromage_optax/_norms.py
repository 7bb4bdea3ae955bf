"""Per-tensor (or per-layer-slice) Frobenius norms: exact and overflow-proof.

Fromage needs, for every tensor W with update g, ‖W‖, ‖g‖ and (for p_bound)
the cosine ⟨W, g⟩ / (‖W‖‖g‖). This module is the one place that decides how
they are made exact; `_batching` makes them fast. Norms come

* **from one read of each tensor** in the common case: plain sums of squares,
  accumulated in at least float32 (bfloat16/float16 inputs are upcast);
* **without overflow or underflow** at any scale: when a sum of squares is not
  safely inside the floating-point range (it overflowed, or is so small that
  flushed subnormal squares could matter), every norm is recomputed after
  scaling each tensor (or slice) by a power of two read off its max-abs value.
  That fallback sits behind a branch (`lax.switch`), so it runs only when
  needed: one branch for each run of groups that `per_platform` makes (off CPUs
  one run, the whole tree; on CPUs the small tensors together and each large
  tensor on its own, each run's reductions waiting for the previous run's branch, so
  that a tensor's step follows its norms while W and g are still in the cache:
  1.5x SGD on 100 tensors of 2 MB, against 2.0x with one branch for the tree).
  A branch is kept on purpose: accumulating every sum at three power-of-two
  scales in the same read would need none, but XLA:CPU gives only a lone Σx²
  its fast reduction kernel, and such a step measured about twice as slow
  (`benchmarks/step_speed/norm_variants.py`; the numbers are in the README).
  The branches read the groups' stacked inputs (low-precision groups as their
  members, stacked again inside), not every leaf, so a float32 tree adds a few
  operands per group, not one per tensor;
* **with the inner product when the caller says so**: in the same read
  (`plain_norms(..., inner_product=True)`), or only on steps where a boolean
  that the caller computed from the plain norms is True (`finish(plain,
  inner_product_when=...)`), as a third branch of the same switch;
* **per layer slice** when `layer_axes` names axes that index separate layers,
  and **globally** across devices when `axis_names` names mesh axes.

A zero sum of squares is checked too (every square may have underflowed),
except for slices that the caller marks as exactly zero (`finish(plain,
exact_zero_where=...)`, per group).

The protocol has two steps per run of `per_platform`, so that decisions stay with
the caller and arrive here as data: `plain_norms` reduces, then `finish` picks
the exact values (the next run's `plain_norms` takes this run's norms as
``after``). `paired_norm_stats` and `tensor_norms` do all of it for the per-leaf
callers. Every norm comes back with `keepdims=True` shapes (size 1 on the
reduced axes), so it broadcasts against its tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from fromage_optax import _batching
from fromage_optax._batching import accumulation_dtype, power_of_two_scale

__all__ = [
    "GroupStats",
    "PairStats",
    "PlainNorms",
    "accumulation_dtype",
    "finish",
    "paired_norm_stats",
    "plain_norms",
    "power_of_two_scale",
    "per_platform",
    "tensor_norms",
]


class PairStats(NamedTuple):
    """Norms of a parameter tensor and its update, and their cosine."""

    param_norm: jax.Array
    update_norm: jax.Array | None
    cosine: jax.Array | None


class GroupStats(NamedTuple):
    """Norms of a group of leaves reduced together.

    Attributes:
      indices: the leaves in the group.
      stacked: whether the values have a leading axis indexing the members (one
        entry per member); otherwise the group is the single leaf `indices[0]`.
      stats: the group's `PairStats` (`update_norm` None for a single source).
    """

    indices: tuple[int, ...]
    stacked: bool
    stats: PairStats

    def member(self, value, position: int):
        """`value` (group-shaped, or a scalar shared by the group) for its `position`-th leaf."""
        return value[position] if self.stacked and jnp.ndim(value) else value


class PlainNorms(NamedTuple):
    """What `plain_norms` found: the groups, their plain norms, and whether to trust them.

    Attributes:
      groups: how the leaves were grouped (`_batching.Group`).
      inputs: per group, its tensors (and partners), stacked, in their own
        dtype (`_batching.group_inputs`): the branches of `finish` read these,
        so that they take a few operands per group rather than one per leaf.
      stats: one `GroupStats` per group from the plain sums (cosine only with
        ``inner_product``).
      sums: per group, the plain sums (`_batching.plain_sums`), for `finish` to
        check.
      inner_product: whether ⟨W, g⟩ was reduced in the same read.
    """

    groups: list
    inputs: list
    stats: list[GroupStats]
    sums: list
    inner_product: bool


def _group_stats(group, values, with_partners: bool, with_cosine: bool) -> GroupStats:
    return GroupStats(
        group.indices,
        group.stacked,
        PairStats(
            values[0],
            values[1] if with_partners else None,
            values[-1] if with_cosine else None,
        ),
    )


def _trusted(sums, source_count, exact_zero_where):
    """Whether every plain sum of squares can be used as it is (a boolean scalar)."""
    untrusted = []
    for index, group_sums in enumerate(sums):
        for position, sum_of_squares in enumerate(group_sums[:source_count]):
            trusted = _batching.safe(sum_of_squares)
            if position == 0 and exact_zero_where is not None:
                marks = jnp.reshape(exact_zero_where[index], sum_of_squares.shape)
                trusted = trusted | ((marks == 0) & (sum_of_squares == 0))
            untrusted.append(~trusted)
    return ~_batching.any_true(untrusted)


def _choose(cpu: Callable[[], Any], default: Callable[[], Any]) -> Any:
    """cpu() when the computation runs on a CPU, else default(): decided when it is lowered
    for a platform (`lax.platform_dependent`), so an exported step carries both layouts."""
    return lax.platform_dependent(cpu=cpu, default=default)


def per_platform(
    body: Callable[[list[list]], Any],
    tensors: Sequence[jax.Array],
    partners: Sequence[jax.Array] | None,
    layer_axes: Sequence[tuple[int, ...]],
    axis_names: Sequence[tuple[str, ...]],
) -> Any:
    """body(runs) with the runs of groups (`_batching.Group`) of the platform it runs on.

    `body` takes the runs one at a time, each through `plain_norms` and `finish`
    (one branch each). On CPUs the small tensors form one run and every large
    tensor one more; elsewhere the whole tree is one run (`_batching.segments`).
    Where both layouts are the same (no large tensor) `body` is traced once.

    Args:
      body: a function of the runs, returning a pytree of arrays (the same
        structure for either layout).
      tensors: leaves W.
      partners: None, or leaves g of the same shapes.
      layer_axes: per leaf, the axes indexing separate layers (empty: one layer).
      axis_names: per leaf, mesh axes to sum over (empty: not sharded).
    """
    groups = _batching.make_groups(tensors, partners, layer_axes, axis_names)
    cpu_runs = _batching.segments(groups, per_large_tensor=True)
    other_runs = _batching.segments(groups, per_large_tensor=False)
    if len(cpu_runs) == len(other_runs):  # then the same runs
        return body(other_runs)
    return _choose(lambda: body(cpu_runs), lambda: body(other_runs))


def plain_norms(
    groups: list,
    tensors: Sequence[jax.Array],
    partners: Sequence[jax.Array] | None = None,
    *,
    inner_product: bool = False,
    after: Any = None,
) -> PlainNorms:
    """Step 1: plain norms of one run (see `per_platform`) from one read of each tensor.

    Args:
      groups: one run of the groups that `per_platform` hands its body.
      tensors, partners: as given to `per_platform`.
      inner_product: also reduce ⟨W, g⟩ in the same read.
      after: None, or an array (the previous run's norms) that these reductions
        wait for, so that each run's steps follow its own norms while its tensors
        are still in the cache.
    """
    sources = [tensors] if partners is None else [tensors, partners]
    inputs = [_batching.group_inputs(group, sources) for group in groups]
    sums = _batching.plain_sums(groups, inputs, inner_product, after)
    stats = [
        _group_stats(
            group, _batching.norms_from_sums(s, inner_product), bool(partners), inner_product
        )
        for group, s in zip(groups, sums)
    ]
    return PlainNorms(groups, inputs, stats, sums, inner_product)


def finish(
    plain: PlainNorms, *, exact_zero_where: Any = None, inner_product_when: Any = None
) -> list[GroupStats]:
    """Step 2: the exact norms, one `GroupStats` per group of the run.

    The plain norms where they are trusted, else (for the whole run, behind one
    `lax.switch`) the rescaled ones. `exact_zero_where`: optional, per group of
    ``plain.groups``, numbers shaped like its norms whose zero entries mark
    slices known to be exactly zero when their sum of squares is (so it needs no
    underflow check); numbers rather than booleans, so that a caller can pass
    values it already has. `inner_product_when`: a boolean scalar that
    the caller computed from ``plain.stats``; where it is False the inner
    products are not reduced (one pass fewer) and every cosine is −1. Only for a
    `plain` made without ``inner_product``.
    """
    if not plain.groups:
        return []
    groups = plain.groups
    source_count = len(plain.inputs[0])
    trusted = _trusted(plain.sums, source_count, exact_zero_where)
    lazy = inner_product_when is not None
    with_cosine = plain.inner_product or lazy
    values = [
        [s.param_norm, s.update_norm, s.cosine][: source_count + plain.inner_product]
        for s in (g.stats for g in plain.stats)
    ]

    # Each branch takes the stacked inputs as an operand (not the leaves, by closure).
    def from_plain_sums(operands):
        values, _ = operands
        return values

    def rescaled(operands):
        _, inputs = operands
        return [
            _batching.rescaled_norms(group, xs, with_cosine) for group, xs in zip(groups, inputs)
        ]

    def without_cosines(operands):
        values, _ = operands
        return [norms + [jnp.full_like(norms[0], -1)] for norms in values]

    def with_plain_cosines(operands):
        values, inputs = operands
        return [
            norms + [_batching.plain_cosine(group, xs, norms)]
            for group, xs, norms in zip(groups, inputs, values)
        ]

    if lazy:
        branches = [without_cosines, with_plain_cosines, rescaled]
        index = jnp.where(trusted, jnp.where(inner_product_when, 1, 0), 2)
    else:
        branches = [rescaled, from_plain_sums]
        index = jnp.asarray(trusted).astype(jnp.int32)
    if isinstance(index, jax.core.Tracer):
        per_group = lax.switch(index, branches, (values, plain.inputs))
    else:  # Outside jit the answer is known: branch in Python, compile nothing.
        per_group = branches[int(index)]((values, plain.inputs))
    return [
        _group_stats(group, v, source_count == 2, with_cosine)
        for group, v in zip(groups, per_group)
    ]


def _per_leaf(groups: list[GroupStats], count: int) -> list[PairStats]:
    per_leaf: list = [None] * count
    for group in groups:
        param_norm, update_norm, cosine = group.stats
        for position, i in enumerate(group.indices):
            per_leaf[i] = PairStats(
                group.member(param_norm, position),
                None if update_norm is None else group.member(update_norm, position),
                None if cosine is None else group.member(cosine, position),
            )
    return per_leaf


def _exact_norms(tensors, partners, layer_axes, axis_names, inner_product) -> list[PairStats]:
    """Both steps for every run, each run after the previous one."""

    def body(runs):
        finished: list[GroupStats] = []
        after = None
        for groups in runs:
            plain = plain_norms(groups, tensors, partners, inner_product=inner_product, after=after)
            stats = finish(plain)
            finished.extend(stats)
            after = stats[0].stats.param_norm
        return _per_leaf(finished, len(tensors))

    return per_platform(body, tensors, partners, layer_axes, axis_names)


def paired_norm_stats(
    params: Sequence[jax.Array],
    updates: Sequence[jax.Array],
    layer_axes: Sequence[tuple[int, ...]],
    axis_names: Sequence[tuple[str, ...]],
    with_cosine: bool,
) -> list[PairStats]:
    """‖W‖, ‖g‖ (and cos(W, g) if asked, NaN where a norm is 0) for every leaf pair.

    Returns:
      One `PairStats` per leaf; every array has the leaf's rank with size 1 on
      the reduced axes, in the accumulation dtype.
    """
    return _exact_norms(params, updates, layer_axes, axis_names, with_cosine)


def tensor_norms(
    tensors: Sequence[jax.Array],
    layer_axes: Sequence[tuple[int, ...]],
    axis_names: Sequence[tuple[str, ...]],
) -> list[jax.Array]:
    """‖W‖ for every leaf (per layer slice), overflow-proof, keepdims shapes."""
    return [s.param_norm for s in _exact_norms(tensors, None, layer_axes, axis_names, False)]
