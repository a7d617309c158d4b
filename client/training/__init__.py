"""Local training at a merchant: the one loop, its samplers and its private step.

:mod:`~client.training.loop` (``run_steps``: batches of users, one step each),
:mod:`~client.training.sampling` (shuffled, fixed-step or Poisson batches),
:mod:`~client.training.clipping` (exact sparse per-user clipping),
:mod:`~client.training.dp_optimizer` (Opacus's DP optimizer on clipped sums),
:mod:`~client.training.private` (DP-SGD over the loop) and
:mod:`~client.training.examples` (record-level examples for ``privacy-unit=interaction``).
"""
