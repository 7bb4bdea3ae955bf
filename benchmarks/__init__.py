"""Flax examples and experiments for fromage_optax, laid out like flax's ``examples/``.

Run them from the repository root: ``python -m benchmarks.<name>``, with
``<name>`` one of ``mlp_linen`` (the main job), ``mlp_nnx``, ``depth``,
``transformer``, ``gan``, ``step_speed`` or ``multihost``.

Shared pieces: `optimizers` (the one optimiser registry), `cli` (presets as
frozen dataclasses, one flag per field), `training` (the loss, pure steps,
loops), `models` (Flax modules), `data`, `text_data`, `frechet`, `reporting`.
Each experiment package holds ``configs`` (presets), ``train`` (steps and
loops; ``timing`` for step_speed), ``report`` and ``__main__`` (the command line).
"""
