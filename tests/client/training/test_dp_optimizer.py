"""Opacus's DP optimizer on pre-clipped sums: noise scale, masked rows, noise-only steps."""

import numpy as np
import pytest
import torch

from client.training.dp_optimizer import NOISE_BLOCK, ClippedSumDPOptimizer


def _noise_of(param, *, sigma, clip, batch, rows=None, grad=None):
    optimizer = ClippedSumDPOptimizer(
        torch.optim.SGD([param], lr=1.0),
        noise_multiplier=sigma,
        max_grad_norm=clip,
        expected_batch_size=batch,
        generator=torch.Generator().manual_seed(0),
        noised_rows={param: rows} if rows is not None else None,
    )
    before = param.detach().clone()
    param.grad = torch.zeros_like(param) if grad is None else grad.clone()
    optimizer.step()
    return (before - param.detach()).numpy()  # SGD lr 1: the step equals the final gradient


def test_noise_has_std_sigma_c_over_expected_batch():
    param = torch.nn.Parameter(torch.zeros(400, 50))
    step = _noise_of(param, sigma=2.0, clip=0.5, batch=10)
    assert step.std() == pytest.approx(2.0 * 0.5 / 10, rel=0.03)
    assert abs(step.mean()) < 0.005


def test_large_tables_are_noised_in_blocks_with_the_same_scale():
    rows = NOISE_BLOCK // 8 + 100  # more than one block of 8-wide rows
    param = torch.nn.Parameter(torch.zeros(rows, 8))
    step = _noise_of(param, sigma=1.0, clip=1.0, batch=1)
    assert step.std() == pytest.approx(1.0, rel=0.01)
    assert np.all(step[-100:] != 0)  # the last, partial block got noise too


def test_only_listed_rows_move():
    param = torch.nn.Parameter(torch.zeros(20, 4))
    grad = torch.zeros(20, 4)
    grad[3] = 1.0
    step = _noise_of(param, sigma=1.0, clip=1.0, batch=1, rows=torch.tensor([3, 7]), grad=grad)
    moved = np.flatnonzero(np.abs(step).sum(axis=1) > 0)
    assert moved.tolist() == [3, 7]


def test_a_clipped_gradient_outside_the_listed_rows_is_dropped_not_released():
    """A sequence model reads untrained items as inputs and targets: their rows have a
    (private) clipped gradient that no noise covers, so it must not move them."""
    param = torch.nn.Parameter(torch.zeros(20, 4))
    grad = torch.zeros(20, 4)
    grad[[3, 11, 19]] = 1.0  # 11 and 19 are outside the trained rows
    step = _noise_of(param, sigma=1.0, clip=1.0, batch=1, rows=torch.tensor([3, 7]), grad=grad)
    moved = np.flatnonzero(np.abs(step).sum(axis=1) > 0)
    assert moved.tolist() == [3, 7]


def test_the_clipped_sum_is_kept_and_averaged():
    param = torch.nn.Parameter(torch.zeros(3))
    step = _noise_of(param, sigma=1e-9, clip=1.0, batch=4, grad=torch.tensor([4.0, 8.0, -4.0]))
    np.testing.assert_allclose(step, [1.0, 2.0, -1.0], atol=1e-6)
