"""Opacus's DP optimizer for gradients that arrive already clipped per example.

:class:`~client.training.clipping.PerUserClipper` leaves, in every shared parameter's
``.grad``, the sum of per-user gradients each clipped to C. Opacus's
``DPOptimizerFastGradientClipping`` is the optimizer made for exactly that
situation (its ghost-clipping mode computes the same sum another way): it adds
``N(0, (sigma C)^2)`` noise with its own noise generator, divides by the
*expected* batch size, runs the wrapped optimizer and calls the accountant's
step hook. Two changes here, both through its overridable methods:

* ``accumulate`` does not copy the gradient (one table fewer in memory);
* ``add_noise`` draws the noise (still with Opacus's ``_generate_noise`` and
  its generator) in blocks of rows and adds it in place, so a million-row
  table never needs a second full-size noise tensor;
* with ``noised_rows``, noise goes only to the listed rows of an item table:
  the rows of items that are not trained (chosen from public, already-private
  counts) receive no gradient and no noise, so they do not move.

Importing this module imports Opacus (seconds); import it only to train.
"""

from __future__ import annotations

from typing import Any

import torch
from opacus.optimizers import DPOptimizerFastGradientClipping
from opacus.optimizers.optimizer import _check_processed_flag, _generate_noise, _mark_as_processed

NOISE_BLOCK = 1 << 22  # elements of noise drawn at once (16 MiB of float32)


class ClippedSumDPOptimizer(DPOptimizerFastGradientClipping):  # type: ignore[misc]
    """Noise, average and step on pre-clipped gradient sums; optional noise row masks."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        noise_multiplier: float,
        max_grad_norm: float,
        expected_batch_size: float,
        generator: torch.Generator | None,
        noised_rows: dict[torch.Tensor, torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            optimizer,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            expected_batch_size=expected_batch_size,
            loss_reduction="mean",
            generator=generator,
            **kwargs,
        )
        # Keyed by parameter identity: rows (int64 ids) that receive noise.
        self._noised_rows = {id(p): rows for p, rows in (noised_rows or {}).items()}

    def accumulate(self) -> None:
        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            p.summed_grad = p.grad  # no copy: one step per batch, nothing to accumulate

    def add_noise(self) -> None:
        std = self.noise_multiplier * self.max_grad_norm
        for p in self.params:
            _check_processed_flag(p.summed_grad)
            grad = p.summed_grad
            rows = self._noised_rows.get(id(p))
            if rows is not None:  # rows outside: clipped gradient dropped, released unchanged
                outside = torch.ones(grad.shape[0], dtype=torch.bool, device=grad.device)
                outside[rows] = False
                grad[outside] = 0.0
            if grad.dim() == 0 or (rows is None and grad.numel() <= NOISE_BLOCK):
                grad.add_(_generate_noise(std, grad, self.generator, self.secure_mode))
            else:
                width = max(1, grad[0].numel())
                block = max(1, NOISE_BLOCK // width)
                total = grad.shape[0] if rows is None else len(rows)
                for start in range(0, total, block):
                    stop = min(start + block, total)
                    if rows is None:
                        part = grad[start:stop]
                        part.add_(_generate_noise(std, part, self.generator, self.secure_mode))
                    else:
                        ids = rows[start:stop]
                        reference = grad.new_empty((len(ids), *grad.shape[1:]))
                        noise = _generate_noise(std, reference, self.generator, self.secure_mode)
                        grad.index_add_(0, ids, noise)
            p.grad = grad.view_as(p)
            _mark_as_processed(p.summed_grad)
