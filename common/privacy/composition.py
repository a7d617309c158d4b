"""Opacus's RDP and PRV composition, computing each distinct piece of a history once.

A merchant's history is one item-count release and then one DP-SGD event per
round, all with the same (sigma, q, steps): Opacus's accountants, handed the
whole history, recompute every piece per event, so each release cost more
than the last (issue 20). These functions return *the same floats* as
Opacus's ``RDPAccountant`` and ``PRVAccountant`` given that history, but
compute each distinct piece once:

* **RDP**: one RDP curve per distinct (sigma, q), kept for the process
  (Opacus's ``compute_rdp`` is ``curve(sigma, q) * steps``), then summed in
  history order as Opacus sums them (one vector add per event, microseconds).
* **PRV**: Opacus's ``PRVAccountant._get_dprv`` step by step: the safe domain
  from the RDP sum above; one discretisation per distinct (sigma, q) and one
  FFT self-composition per distinct (sigma, q, steps) on that domain; then
  Opacus's pairwise convolution tree over the history, with each distinct pair
  convolved once (a tree over identical leaves has a handful of distinct nodes
  per level, so about 2 log2(n) convolutions instead of n - 1).

Merging events with equal (sigma, q) into one (summing steps) is exact for RDP
but moves PRV's figure by up to ~1e-8 relative (FFT self-composition and the
convolution tree round differently), so PRV keeps the history's shape.
``tests/common/privacy/test_composition.py`` holds both to Opacus bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

History = Sequence[tuple[float, float, int]]  # (sigma, q, steps), steps > 0, in order

# Opacus's RDPAccountant default orders: what its PRV accountant sizes the domain with.
OPACUS_DEFAULT_ORDERS: tuple[float, ...] = tuple(
    [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
)


@lru_cache(maxsize=256)
def rdp_curve(
    noise_multiplier: float, sample_rate: float, orders: tuple[float, ...]
) -> npt.NDArray[np.float64]:
    """RDP of one step of the sampled Gaussian mechanism at ``orders`` (read-only, cached)."""
    from opacus.accountants.analysis import rdp as analysis

    curve = np.asarray(
        analysis.compute_rdp(
            q=sample_rate, noise_multiplier=noise_multiplier, steps=1, orders=list(orders)
        ),
        dtype=np.float64,
    )
    curve.flags.writeable = False
    return curve


def rdp_total(history: History, *, orders: tuple[float, ...]) -> Any:
    """The summed RDP of ``history`` at ``orders``, added in history order as Opacus adds it."""
    total: Any = 0
    for sigma, q, steps in history:
        total = total + rdp_curve(sigma, q, orders) * steps
    return total


def rdp_epsilon(history: History, *, delta: float, orders: tuple[float, ...]) -> float:
    """Epsilon at ``delta``: Opacus ``RDPAccountant(history).get_epsilon(delta, alphas=orders)``."""
    from opacus.accountants.analysis import rdp as analysis

    eps, _ = analysis.get_privacy_spent(
        orders=list(orders), rdp=rdp_total(history, orders=orders), delta=delta
    )
    return float(eps)


def _safe_domain_size(history: History, *, eps_error: float, delta_error: float) -> float:
    """Opacus's ``compute_safe_domain_size`` for the history's PRVs."""
    orders = OPACUS_DEFAULT_ORDERS
    total_steps = sum(steps for _, _, steps in history)
    largest = rdp_epsilon(history, delta=delta_error / 4, orders=orders)
    single = {(sigma, q) for sigma, q, _ in history}  # max() does not depend on the order
    for sigma, q in single:
        largest = max(
            largest,
            rdp_epsilon([(sigma, q, 1)], delta=delta_error / (8 * total_steps), orders=orders),
        )
    return max(largest, eps_error) + 3


def prv_epsilon(history: History, *, delta: float, eps_error: float) -> float:
    """Epsilon at ``delta``: Opacus ``PRVAccountant(history).get_epsilon(delta, eps_error=...)``."""
    from opacus.accountants.analysis.prv import (
        DiscretePRV,
        Domain,
        PoissonSubsampledGaussianPRV,
        TruncatedPrivacyRandomVariable,
        discretize,
    )
    from opacus.accountants.analysis.prv.compose import _compose_fourier, _compose_two

    delta_error = delta / 1000
    total_steps = sum(steps for _, _, steps in history)
    size = _safe_domain_size(history, eps_error=eps_error, delta_error=delta_error)
    mesh = eps_error / np.sqrt(total_steps * np.log(12 / delta_error) / 2)
    domain = Domain.create_aligned(-size, size, mesh)

    discrete: dict[tuple[float, float], DiscretePRV] = {}
    nodes: list[DiscretePRV] = []  # every distinct node of the composition, by id
    leaf_ids: dict[tuple[float, float, int], int] = {}
    leaves: list[int] = []
    for sigma, q, steps in history:
        if (sigma, q, steps) not in leaf_ids:
            if (sigma, q) not in discrete:
                prv = PoissonSubsampledGaussianPRV(q, sigma)
                truncated = TruncatedPrivacyRandomVariable(prv, domain.t_min, domain.t_max)
                discrete[(sigma, q)] = discretize(truncated, domain)
            leaf_ids[(sigma, q, steps)] = len(nodes)
            nodes.append(_compose_fourier(discrete[(sigma, q)], steps))
        leaves.append(leaf_ids[(sigma, q, steps)])
    root = _convolution_tree(leaves, nodes, _compose_two)
    _, _, eps_upper = nodes[root].compute_epsilon(delta, delta_error, eps_error)
    return float(eps_upper)


def _convolution_tree(level: list[int], nodes: list[Any], compose_two: Any) -> int:
    """Opacus's ``_compose_convolution_tree`` over node ids, each distinct pair composed once."""
    pairs: dict[tuple[int, int], int] = {}
    while len(level) > 1:
        above: list[int] = []
        if len(level) % 2 == 1:
            above.append(level.pop())
        for left, right in zip(level[:-1:2], level[1::2], strict=True):
            if (left, right) not in pairs:
                pairs[(left, right)] = len(nodes)
                nodes.append(compose_two(nodes[left], nodes[right]))
            above.append(pairs[(left, right)])
        level = above
    return level[0]
