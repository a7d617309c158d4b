"""Deterministic synthetic e-commerce federations: the embedded default dataset.

The generative story, one merchant at a time:

* Items have latent factors ``v_i ~ N(0, I)`` and a power-law popularity
  ``log pop_i = -popularity_exponent * log(rank_i)`` (Zipf).
* Each merchant stocks an overlapping but different catalog: popular items are
  stocked almost everywhere, the long tail by few merchants
  (``stock_prob_i = min_stock + (1 - min_stock) * pop_percentile_i**stock_curve``),
  plus a specialty bias toward items close to the merchant's taste centre.
* Merchants have user bases of different sizes (Dirichlet shares with
  ``merchant_size_concentration``; smaller means more skew) and a taste centre
  ``c_m ~ N(0, merchant_taste_shift**2 I)``; a user's factors are
  ``u = c_m + N(0, I)`` (non-IID across merchants).
* A user with ``n_u ~ 1 + Poisson(mean_events - 1)`` events chooses distinct items
  from the merchant's catalog with probability
  ``softmax(u . v_i / (temperature * sqrt(dim)) + log pop_i)`` (Gumbel top-k).
* Events get increasing timestamps, an event type (view / cart / purchase, with
  purchase likelier for high-affinity items) and a 1-5 rating-like ``value``.

Everything is derived from one ``seed`` through ``numpy.random.SeedSequence``:
the same spec always gives the same federation, byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.data.schema import Interactions
from common.errors import ConfigError

START_TIMESTAMP = 1_700_000_000  # 2023-11-14, an arbitrary fixed epoch


@dataclass(frozen=True)
class SyntheticSpec:
    """Parameters of a synthetic federation. Defaults: ~10 merchants, 4k users, 1.5k items."""

    num_merchants: int = 10
    num_users: int = 4000
    num_items: int = 1500
    latent_dim: int = 16
    mean_events: float = 25.0
    popularity_exponent: float = 0.8
    temperature: float = 0.25
    min_stock: float = 0.15
    stock_curve: float = 1.0
    merchant_taste_shift: float = 0.6
    merchant_size_concentration: float = 2.0
    event_mix: tuple[float, float, float] = (0.7, 0.2, 0.1)  # view, cart, purchase
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.num_merchants >= 1, "num_merchants must be >= 1"),
            (
                self.num_users >= 2 * self.num_merchants,
                "num_users must be at least 2 per merchant",
            ),
            (self.num_items >= 10, "num_items must be >= 10"),
            (self.latent_dim >= 1, "latent_dim must be >= 1"),
            (self.mean_events >= 2.0, "mean_events must be >= 2 (leave-last-out needs two)"),
            (self.temperature > 0.0, "temperature must be > 0"),
            (0.0 <= self.min_stock <= 1.0, "min_stock must be in [0, 1]"),
            (self.merchant_size_concentration > 0.0, "merchant_size_concentration must be > 0"),
            (abs(sum(self.event_mix) - 1.0) < 1e-6, "event_mix must sum to 1"),
        ]
        problems = [message for ok, message in checks if not ok]
        if problems:
            raise ConfigError(f"Invalid synthetic federation spec {self}: " + "; ".join(problems))


def merchant_name(index: int) -> str:
    return f"merchant-{index:02d}"


def generate_federation(spec: SyntheticSpec) -> Interactions:
    """Generate the event log of a whole federation, with a ``merchant_id`` column."""
    root = np.random.SeedSequence(spec.seed)
    item_seq, merchant_seq = root.spawn(2)
    item_rng = np.random.default_rng(item_seq)
    dim = spec.latent_dim

    item_factors = item_rng.standard_normal((spec.num_items, dim))  # (items, dim)
    popularity_rank = item_rng.permutation(spec.num_items) + 1
    log_pop = -spec.popularity_exponent * np.log(popularity_rank)  # (items,)
    pop_percentile = 1.0 - (popularity_rank - 1) / spec.num_items  # 1 = most popular
    stock_prob = spec.min_stock + (1.0 - spec.min_stock) * pop_percentile**spec.stock_curve

    shares = item_rng.dirichlet(np.full(spec.num_merchants, spec.merchant_size_concentration))
    sizes = np.maximum(2, np.round(shares * spec.num_users)).astype(np.int64)

    columns: dict[str, list[np.ndarray]] = {k: [] for k in ("u", "i", "t", "e", "v", "m")}
    for m, m_seq in enumerate(merchant_seq.spawn(spec.num_merchants)):
        rng = np.random.default_rng(m_seq)
        centre = rng.standard_normal(dim) * spec.merchant_taste_shift  # (dim,)
        affinity_to_centre = item_factors @ centre / np.sqrt(dim)
        specialty = 1.0 / (1.0 + np.exp(-affinity_to_centre))  # (items,) in (0, 1)
        stocked = rng.random(spec.num_items) < np.clip(stock_prob * (0.5 + specialty), 0, 1)
        stocked[np.argmax(log_pop)] = True
        catalog = np.flatnonzero(stocked)
        users = centre + rng.standard_normal((sizes[m], dim))  # (users_m, dim)
        logits = users @ item_factors[catalog].T / (spec.temperature * np.sqrt(dim))
        logits += log_pop[catalog]  # (users_m, catalog_m)
        num_events = np.minimum(1 + rng.poisson(spec.mean_events - 1.0, sizes[m]), len(catalog))
        gumbel = logits + rng.gumbel(size=logits.shape)
        order = np.argsort(-gumbel, axis=1)  # Gumbel top-k = sampling without replacement
        for u in range(sizes[m]):
            chosen = catalog[order[u, : num_events[u]]]
            n = len(chosen)
            gaps = rng.exponential(3600.0 * 24, size=n).astype(np.int64) + 1
            times = START_TIMESTAMP + rng.integers(0, 86_400 * 30) + np.cumsum(gaps)
            affinity = users[u] @ item_factors[chosen].T / np.sqrt(dim)  # (n,)
            strength = 1.0 / (1.0 + np.exp(-2.0 * affinity))
            mix = np.asarray(spec.event_mix)
            p_purchase = np.clip(mix[2] * 2.0 * strength, 0.0, 1.0)
            p_cart = np.clip(mix[1] * (1.0 - p_purchase) / max(1e-9, 1.0 - mix[2]), 0.0, 1.0)
            draw = rng.random(n)
            kinds = np.where(
                draw < p_purchase, "purchase", np.where(draw < p_purchase + p_cart, "cart", "view")
            )
            ratings = np.clip(np.round(1.0 + 4.0 * strength + rng.normal(0.0, 0.5, n)), 1, 5)
            columns["u"].append(np.full(n, f"{merchant_name(m)}-u{u:05d}", dtype=object))
            columns["i"].append(chosen)
            columns["t"].append(times)
            columns["e"].append(kinds.astype(object))
            columns["v"].append(ratings.astype(np.float32))
            columns["m"].append(np.full(n, merchant_name(m), dtype=object))

    item_keys = np.asarray([f"item-{i:06d}" for i in range(spec.num_items)], dtype=object)
    return Interactions(
        user_id=np.concatenate(columns["u"]),
        item_id=item_keys[np.concatenate(columns["i"])],
        timestamp=np.concatenate(columns["t"]).astype(np.int64),
        event_type=np.concatenate(columns["e"]),
        value=np.concatenate(columns["v"]).astype(np.float32),
        merchant_id=np.concatenate(columns["m"]),
    )
