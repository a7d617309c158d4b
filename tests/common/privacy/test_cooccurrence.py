"""The DP co-occurrence release: bounded contributions, sensitivity 1, noise, EASE's closed form."""

import numpy as np
import pytest

from common.data.catalog import ItemCatalog
from common.data.dataset import build_user_item_data
from common.privacy.cooccurrence import (
    SENSITIVITY,
    ease_weights,
    gram_contributions,
    noisy_gram,
    upper_triangle,
    user_vectors,
)
from simulations.synthetic import SyntheticSpec, generate_federation


@pytest.fixture(scope="module")
def events():
    return generate_federation(SyntheticSpec(num_merchants=1, num_users=60, num_items=30, seed=5))


def _data(events, keep=None):
    catalog = ItemCatalog.from_keys(events.item_id)
    if keep is not None:
        events = events.take(keep)
    return build_user_item_data(events, catalog, hold_out=False)


def test_each_users_vector_has_l2_norm_at_most_one(events):
    data = _data(events)
    items = np.arange(0, data.num_items, 2)  # half the catalog is trained
    for cap in (3, 1000):
        user, _, value = user_vectors(data, items, cap=cap, rng=np.random.default_rng(0))
        norms = np.sqrt(np.bincount(user, weights=value**2, minlength=data.num_users))
        assert norms.max() == pytest.approx(1.0)  # users with a trained item reach exactly 1
        assert np.all(norms <= 1.0 + 1e-12)
        assert np.bincount(user).max() <= cap


def test_removing_one_user_moves_the_released_triangle_by_at_most_the_sensitivity(events):
    """Adjacency: add or remove one user with all of their interactions."""
    full = _data(events)
    items = np.arange(full.num_items)
    before = upper_triangle(gram_contributions(full, items, cap=1000, rng=np.random.default_rng(0)))
    users = np.asarray(events.user_id)
    moved = []
    for removed in np.unique(users)[:25]:
        fewer = _data(events, keep=users != removed)
        after = upper_triangle(
            gram_contributions(fewer, items, cap=1000, rng=np.random.default_rng(0))
        )
        moved.append(np.linalg.norm(before - after))
    assert max(moved) <= SENSITIVITY + 1e-9
    assert max(moved) > 0.5  # the bound is not vacuous: one user moves it by a real amount


def test_noise_is_symmetric_with_the_stated_standard_deviation(events):
    data = _data(events)
    items = np.arange(data.num_items)
    exact = gram_contributions(data, items, cap=1000, rng=np.random.default_rng(1))
    released = noisy_gram(data, items, cap=1000, noise_multiplier=2.0, rng=np.random.default_rng(1))
    assert np.array_equal(released, released.T)
    noise = upper_triangle(released - exact)
    assert noise.std() == pytest.approx(2.0, rel=0.1)  # 465 draws


def test_ease_weights_are_the_closed_form_with_a_relative_ridge():
    rng = np.random.default_rng(0)
    x = (rng.random((50, 6)) < 0.4).astype(float)
    gram = x.T @ x
    ridge = 0.5
    weights = ease_weights(gram, ridge=ridge)
    lam = ridge * np.diag(gram).mean()
    # EASE: argmin ||X - XB||^2 + lam ||B||^2 subject to diag(B) = 0, column by column
    for j in range(6):
        others = [i for i in range(6) if i != j]
        sub = gram[np.ix_(others, others)] + lam * np.eye(5)
        expected = np.linalg.solve(sub, gram[others, j])
        assert np.allclose(weights[others, j], expected)
    assert np.all(np.diag(weights) == 0)
    # the noise term adds noise_ridge x 2 noise_std sqrt(N) to lambda
    noisy = ease_weights(gram, ridge=ridge, noise_ridge=0.5, noise_std=2.0)
    lam_noise = lam + 0.5 * 2 * 2.0 * np.sqrt(6)
    sub = gram[1:, 1:] + lam_noise * np.eye(5)
    assert np.allclose(noisy[1:, 0], np.linalg.solve(sub, gram[1:, 0]))
    assert np.all(ease_weights(np.zeros((4, 4)), ridge=ridge) == 0)
    with pytest.raises(ValueError, match="ridge"):
        ease_weights(gram, ridge=0.0)
