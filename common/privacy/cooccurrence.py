"""Differentially private item co-occurrence: the Gaussian mechanism on a bounded Gram matrix.

A merchant's users are rows of a user × item matrix over the federation's
``N`` trained items (public: chosen from the private item counts). User ``u``
contributes ``x_u x_u^T``, where ``x_u`` is ``1 / sqrt(m_u)`` on each of their
``m_u`` distinct trained items (at most ``cap``, drawn at random if more) and 0
elsewhere, so ``||x_u||_2 <= 1``.

What is released: the upper triangle, diagonal included, of
``G = sum_u x_u x_u^T`` plus independent ``N(0, sigma^2)`` on each of its
``N (N + 1) / 2`` entries, mirrored into a symmetric matrix (mirroring is
post-processing). Adding or removing one user (unit ``user``: all of their
interactions) changes that triangle by ``x_u x_u^T``'s upper triangle, whose
L2 norm is ``sqrt(sum_{i <= j} x_i^2 x_j^2) <= ||x_u||_2^2 <= 1``: the L2
sensitivity is 1, and the release is one Gaussian-mechanism event
``PrivacyEvent(sigma, sample_rate=1, steps=1)``, composed by the merchant's
accountant with its item counts (the same mechanism on the same users).

Everything after the release is post-processing: the federation's noisy Gram
(the mean over merchants) is turned into item-item weights by EASE's closed
form (Steck, WWW 2019), ``B = I - P diag(1 / diag(P))``, ``P = (G + lambda I)^-1``,
with ``lambda`` relative to the Gram's mean diagonal so it means the same at
any federation size.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from common.data.dataset import UserItemData
from common.privacy.counts import bounded_pairs

SENSITIVITY = 1.0  # L2, of the released upper triangle, for one user added or removed


def user_vectors(
    data: UserItemData,
    items: npt.NDArray[np.int64],
    *,
    cap: int,
    rng: np.random.Generator,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Each user's bounded vector over ``items`` as COO triples ``(user, column, value)``.

    ``column`` indexes ``items`` (sorted, distinct catalog ids); a user keeps at
    most ``cap`` of their distinct trained items, drawn with ``rng``.
    """
    if cap < 1:
        raise ValueError(f"cap must be >= 1, got {cap}")
    column_of = np.full(data.num_items, -1, dtype=np.int64)
    column_of[items] = np.arange(len(items))
    users = np.repeat(np.arange(data.num_users), np.diff(data.train_indptr))
    columns = column_of[data.train_items]
    kept = columns >= 0
    return bounded_pairs(
        users[kept], columns[kept], num_users=data.num_users, width=len(items), cap=cap, rng=rng
    )


def gram_contributions(
    data: UserItemData,
    items: npt.NDArray[np.int64],
    *,
    cap: int,
    rng: np.random.Generator,
) -> npt.NDArray[np.float64]:
    """``sum_u x_u x_u^T`` over ``items``, shape (N, N), before noise."""
    import scipy.sparse as sp

    user, column, value = user_vectors(data, items, cap=cap, rng=rng)
    rows = sp.csr_matrix((value, (user, column)), shape=(data.num_users, len(items)))
    gram: npt.NDArray[np.float64] = np.asarray((rows.T @ rows).toarray(), dtype=np.float64)
    return gram


def symmetric_noise(size: int, sigma: float, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """``N(0, sigma^2)`` on each upper-triangle entry (diagonal included), mirrored below."""
    upper = np.triu(rng.normal(0.0, sigma, size=(size, size)))
    noise: npt.NDArray[np.float64] = upper + np.triu(upper, 1).T
    return noise


def noisy_gram(
    data: UserItemData,
    items: npt.NDArray[np.int64],
    *,
    cap: int,
    noise_multiplier: float,
    rng: np.random.Generator,
) -> npt.NDArray[np.float64]:
    """The released Gram: contributions plus symmetric Gaussian noise (one Gaussian event)."""
    exact = gram_contributions(data, items, cap=cap, rng=rng)
    return exact + symmetric_noise(len(items), noise_multiplier * SENSITIVITY, rng)


def upper_triangle(gram: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """The released coordinates of a symmetric Gram: its upper triangle, diagonal included."""
    rows, cols = np.triu_indices(gram.shape[0])
    return np.asarray(gram[rows, cols], dtype=np.float64)


def ease_weights(
    gram: npt.NDArray[np.floating],
    *,
    ridge: float,
    noise_ridge: float = 0.0,
    noise_std: float = 0.0,
) -> npt.NDArray[np.float64]:
    """EASE's item-item weights from a (noisy) Gram: zero diagonal, shape (N, N).

    The Gram is first projected onto the positive semi-definite cone (its
    negative eigenvalues, noise, set to 0). ``lambda = ridge x`` the Gram's
    mean diagonal (the mean squared weight an item receives), so the
    regularisation scales with the data, plus ``noise_ridge x 2 noise_std
    sqrt(N)``, about the spectral norm of the noise (``noise_std`` per entry), so
    it damps what the noise adds at any epsilon and federation size. An empty or
    all-noise Gram (mean diagonal <= 0) gives zero weights.
    """
    if ridge <= 0:
        raise ValueError(f"ridge must be > 0, got {ridge}")
    matrix = np.asarray(gram, dtype=np.float64)
    size = matrix.shape[0]
    scale = float(np.mean(np.diag(matrix))) if size else 0.0
    if size == 0 or not scale > 0:
        return np.zeros((size, size))
    # The noise can make the Gram indefinite; its projection onto the PSD cone (negative
    # eigenvalues set to 0, as in "Analyze Gauss") keeps G + lambda I well conditioned.
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2.0)
    lam = ridge * scale + noise_ridge * 2.0 * noise_std * np.sqrt(size)
    precision = (vectors / (np.maximum(values, 0.0) + lam)) @ vectors.T
    weights: npt.NDArray[np.float64] = -precision / np.diag(precision)[None, :]
    np.fill_diagonal(weights, 0.0)
    return weights
