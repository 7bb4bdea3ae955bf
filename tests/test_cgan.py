"""Tests of benchmarks/models/cgan.py (the convolutional, spectrally normalised cGAN) and its
non-trainable state in the GAN step: conditional BatchNorm, spectral norm under jit, vmap and
an Orbax checkpoint."""

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from benchmarks.gan import configs
from benchmarks.gan import step as gan_step
from benchmarks.models import cgan

LATENT = 4


def _tiny():
    generator = cgan.ConditionalGenerator((8, 4, 4), image_side=8, num_classes=3, embedding_size=4)
    discriminator = cgan.ProjectionDiscriminator((4, 8, 8), image_side=8, num_classes=3)
    rng = np.random.default_rng(0)
    batch = {
        "image": jnp.asarray(rng.uniform(-1, 1, (6, 64)), jnp.float32),
        "label": jnp.arange(6, dtype=jnp.int32) % 3,
    }
    return generator, discriminator, batch


class _Tiny:
    """The tiny networks, one batch, and the jitted init and step (compiled once per module)."""

    def __init__(self):
        self.generator, self.discriminator, self.batch = _tiny()
        optimizer = configs.make_optimizer("fromage", configs.PAPER_BEST_LEARNING_RATES["fromage"])
        self.init = jax.jit(
            lambda key: gan_step.init_gan_state(
                self.generator, self.discriminator, optimizer, key, latent_size=LATENT
            )
        )
        self.step = jax.jit(
            gan_step.make_train_step(
                self.generator, self.discriminator, optimizer, latent_size=LATENT
            )
        )

    def state(self, seed=0):
        return self.init(jax.random.key(seed))


@pytest.fixture(scope="module")
def tiny():
    return _Tiny()


def _sigmas(batch_stats):
    return {k: float(v) for k, v in cgan.spectral_norm_estimates(batch_stats).items()}


def test_every_layer_is_spectrally_normalised_and_orthogonal_at_init(tiny):
    generator, state = tiny.generator, tiny.state()
    for params, batch_stats in (
        (state.generator_params, state.generator_batch_stats),
        (state.discriminator_params, state.discriminator_batch_stats),
    ):
        kernels = {
            "/".join(str(k.key) for k in path): leaf
            for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
            if leaf.ndim >= 2
        }
        # One power-iteration vector per matrix (kernel or embedding), named after it.
        names = {"/".join(p.split("/")[-3:-1]) for p in _sigmas(batch_stats)}
        assert {"/".join(p.split("/")[-2:]) for p in kernels} == names
        for kernel in kernels.values():
            matrix = np.asarray(kernel).reshape(-1, kernel.shape[-1])
            # Orthogonal init: the smaller side's vectors are orthonormal, spectral norm 1.
            np.testing.assert_allclose(np.linalg.svd(matrix, compute_uv=False).max(), 1, 1e-5)
    assert generator.base_side == 2
    with pytest.raises(ValueError, match="not divisible"):
        cgan.ConditionalGenerator((8, 4, 4), image_side=6, num_classes=3).base_side  # noqa: B018


def test_conditional_batch_norm_uses_the_class_and_moves_its_averages_in_training_only(tiny):
    generator, state = tiny.generator, tiny.state()
    variables = {"params": state.generator_params, "batch_stats": state.generator_batch_stats}
    latents = jnp.ones((3, LATENT))
    images = generator.apply(variables, latents, jnp.arange(3))
    assert images.shape == (3, 64) and float(jnp.max(jnp.abs(images))) <= 1.0
    # Same latent, different classes: different images (evaluation mode, running averages).
    assert float(jnp.max(jnp.abs(images[0] - images[1]))) > 1e-3
    # The class enters only through its embedding: equal embeddings, equal images.
    params = dict(state.generator_params)
    embedding = params["Embed_0"]["embedding"]
    params["Embed_0"] = {"embedding": jnp.broadcast_to(embedding[:1], embedding.shape)}
    same = generator.apply({**variables, "params": params}, latents, jnp.arange(3))
    np.testing.assert_allclose(same[0], same[1], atol=1e-6)
    # Training mode: batch statistics, and the running averages and spectral-norm vectors move.
    _, mutated = generator.apply(
        variables, jax.random.normal(jax.random.key(1), (6, LATENT)), jnp.arange(6) % 3,
        train=True, mutable=["batch_stats"],
    )  # fmt: skip
    before = jax.tree_util.tree_leaves_with_path(state.generator_batch_stats)
    after = dict(jax.tree_util.tree_leaves_with_path(mutated["batch_stats"]))
    moved = {jax.tree_util.keystr(p) for p, v in before if not np.array_equal(v, after[p])}
    assert any("BatchNorm_0']['mean" in p for p in moved) and any("/u'" in p for p in moved)
    # Evaluation mode changes nothing (and asks for no mutable collection).
    again = generator.apply(variables, latents, jnp.arange(3))
    np.testing.assert_array_equal(images, again)


def test_spectral_norm_state_under_jit_converges_to_the_largest_singular_value(tiny):
    discriminator, batch, state = tiny.discriminator, tiny.batch, tiny.state()
    variables = {
        "params": state.discriminator_params,
        "batch_stats": state.discriminator_batch_stats,
    }

    @jax.jit
    def power_iteration(batch_stats):
        _, mutated = discriminator.apply(
            {**variables, "batch_stats": batch_stats}, batch["image"], batch["label"],
            train=True, mutable=["batch_stats"],
        )  # fmt: skip
        return mutated["batch_stats"]

    batch_stats = state.discriminator_batch_stats
    for _ in range(30):
        batch_stats = power_iteration(batch_stats)
    kernel = state.discriminator_params["DownBlock_1"]["Conv_0"]["kernel"]
    largest = np.linalg.svd(np.asarray(kernel).reshape(-1, kernel.shape[-1]), compute_uv=False)[0]
    sigma = _sigmas(batch_stats)["DownBlock_1/SpectralNorm_0/Conv_0/kernel/sigma"]
    np.testing.assert_allclose(sigma, largest, rtol=1e-4)


def test_train_step_threads_the_state_under_jit_and_vmap(tiny):
    batch, state, step = tiny.batch, tiny.state(), tiny.step
    new, _ = step(state, batch)
    # One step moves both networks' spectral-norm vectors and the generator's BatchNorm averages.
    for name in ("generator_batch_stats", "discriminator_batch_stats"):
        before, after = getattr(state, name), getattr(new, name)
        changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), before, after)
        assert any(jax.tree.leaves(changed)), name
    # Seeds stacked and vmapped: each model is the one trained alone.
    other = tiny.state(seed=1)
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), state, other)
    batches = jax.tree.map(lambda leaf: jnp.stack([leaf, leaf[::-1]]), batch)
    vmapped, metrics = jax.jit(jax.vmap(step))(stacked, batches)
    alone, _ = step(other, jax.tree.map(lambda leaf: leaf[::-1], batch))
    unkey = lambda s: s._replace(key=jax.random.key_data(s.key))  # noqa: E731
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
        unkey(jax.tree.map(lambda leaf: leaf[1], vmapped)),
        unkey(alone),
    )
    assert metrics["discriminator_loss"].shape == (2,)


def test_state_round_trips_through_an_orbax_checkpoint(tmp_path, tiny):
    batch, step = tiny.batch, tiny.step
    state, _ = step(tiny.state(), batch)
    storable = state._replace(key=jax.random.key_data(state.key))
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(tmp_path / "state", storable)
        checkpointer.wait_until_finished()
        restored = checkpointer.restore(tmp_path / "state", storable)
    assert type(restored) is type(storable)
    jax.tree.map(np.testing.assert_array_equal, restored, storable)
    restored = restored._replace(key=jax.random.wrap_key_data(restored.key))
    # The restored state steps on exactly as the original.
    unkey = lambda s: s._replace(key=jax.random.key_data(s.key))  # noqa: E731
    jax.tree.map(
        np.testing.assert_array_equal,
        unkey(step(restored, batch)[0]),
        unkey(step(state, batch)[0]),
    )
