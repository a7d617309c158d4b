"""Deterministic synthetic e-commerce federations: the embedded default dataset.

A latent-factor model alone flatters matrix factorisation: every structure in
the data is then low-rank and order-free. Real logs are not like that (see the
README's "Real interaction logs"), so the generator layers on the structures
real logs have, each with a knob that turns it off:

* **Items** have latent factors ``v_i ~ N(0, I)``, a Zipf base popularity
  ``log pop_i = -popularity_exponent * log(rank_i)`` and a popularity that
  changes over the log's ``span_days``: a per-item trend
  ``log pop_i(t) += trend_i * (t / span - 1/2)`` with
  ``trend_i ~ N(0, popularity_drift**2)``, and a share ``new_item_share`` of
  items launched at a uniform time inside the span (unavailable before it).
* **Co-purchase**: each item has ``complements_per_item`` complements drawn by
  popularity, unrelated to the latent factors (accessories, refills). After
  buying an item, the next event is one of its complements with probability
  ``copurchase_prob`` (when the merchant stocks it and the user has not had it).
* **Merchants** stock an overlapping but different catalog: popular items are
  stocked almost everywhere, the long tail by few merchants
  (``stock_prob_i = min_stock + (1 - min_stock) * pop_percentile_i**stock_curve``),
  plus a specialty bias toward items close to the merchant's taste centre.
  User bases differ in size (Dirichlet shares with
  ``merchant_size_concentration``; smaller means more skew) and in taste: a
  centre ``c_m ~ N(0, merchant_taste_shift**2 I)``, a user's base taste
  ``b_u = c_m + N(0, I)`` (non-IID across merchants).
* **Users act in sequence.** A user with ``n_u ~ 1 + Poisson(mean_events - 1)``
  events starts at a uniform time in the span; events are ``mean_gap_days``
  apart on average (exponential gaps). Taste drifts: ``u_k = b_u + d_k`` with
  ``d_{k+1} = taste_memory * d_k + sqrt(1 - taste_memory**2) * taste_drift * N(0, I)``
  (stationary spread ``taste_drift``). Each event picks one item the user has
  not had, among items stocked and launched by then, with probability
  ``softmax((u_k + sequence_strength * v_last) . v_i / (temperature * sqrt(dim))
  + log pop_i(t))``: the last item sets a short-term intent. With probability
  ``repeat_prob`` the event instead re-buys one of the user's recent items.

So the held-out (latest) item is drawn like every other item from the user's
state at that time, not the weakest of a set drawn at once, and order carries
signal that order-free models cannot use. Events get an event type (view /
cart / purchase, purchase likelier for high-affinity items) and a 1-5
rating-like ``value``.

Everything is derived from one ``seed`` through ``numpy.random.SeedSequence``:
the same spec always gives the same federation, byte for byte.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from common.data.schema import Interactions
from common.errors import ConfigError

START_TIMESTAMP = 1_700_000_000  # 2023-11-14, an arbitrary fixed epoch
DAY = 86_400
RECENT_REPEATS = 5  # a repeat re-buys one of the user's last few distinct items


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
    # (low, high) > 0: each merchant's user count is drawn log-uniformly from [low, high]
    # (a power law, density ~ 1/n: many small shops, few large ones) and num_users is
    # not used; (0, 0): num_users split by a Dirichlet(merchant_size_concentration) draw.
    merchant_size_range: tuple[int, int] = (0, 0)
    event_mix: tuple[float, float, float] = (0.7, 0.2, 0.1)  # view, cart, purchase
    # Time and sequence (0 turns each off; all off = a static latent-factor model).
    span_days: float = 365.0
    mean_gap_days: float = 3.0
    taste_drift: float = 0.7
    taste_memory: float = 0.8
    sequence_strength: float = 0.5
    copurchase_prob: float = 0.15
    complements_per_item: int = 3
    repeat_prob: float = 0.05
    new_item_share: float = 0.3
    popularity_drift: float = 1.0
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
            (
                self.merchant_size_range == (0, 0)
                or 2 <= self.merchant_size_range[0] <= self.merchant_size_range[1],
                "merchant_size_range must be (0, 0) or (low, high) with 2 <= low <= high",
            ),
            (abs(sum(self.event_mix) - 1.0) < 1e-6, "event_mix must sum to 1"),
            (self.span_days > 0.0, "span_days must be > 0"),
            (self.mean_gap_days > 0.0, "mean_gap_days must be > 0"),
            (self.taste_drift >= 0.0, "taste_drift must be >= 0"),
            (0.0 <= self.taste_memory < 1.0, "taste_memory must be in [0, 1)"),
            (self.sequence_strength >= 0.0, "sequence_strength must be >= 0"),
            (0.0 <= self.copurchase_prob <= 1.0, "copurchase_prob must be in [0, 1]"),
            (self.complements_per_item >= 1, "complements_per_item must be >= 1"),
            (0.0 <= self.repeat_prob < 1.0, "repeat_prob must be in [0, 1)"),
            (0.0 <= self.new_item_share < 1.0, "new_item_share must be in [0, 1)"),
            (self.popularity_drift >= 0.0, "popularity_drift must be >= 0"),
        ]
        problems = [message for ok, message in checks if not ok]
        if problems:
            raise ConfigError(f"Invalid synthetic federation spec {self}: " + "; ".join(problems))


def static_model(spec: SyntheticSpec) -> SyntheticSpec:
    """``spec`` with every structure beyond the latent-factor model turned off: the static
    model the generator was before users acted in time."""
    return dataclasses.replace(
        spec,
        taste_drift=0.0,
        sequence_strength=0.0,
        copurchase_prob=0.0,
        repeat_prob=0.0,
        new_item_share=0.0,
        popularity_drift=0.0,
    )


def merchant_name(index: int) -> str:
    return f"merchant-{index:02d}"


@dataclass(frozen=True)
class ItemSide:
    """The federation-wide item side: factors, popularity over time, launches, complements."""

    factors: npt.NDArray[np.float64]  # (items, dim)
    log_pop: npt.NDArray[np.float64]  # (items,) base log popularity
    trend: npt.NDArray[np.float64]  # (items,) change in log popularity across the span
    launch: npt.NDArray[np.float64]  # (items,) launch time in seconds from the start; -inf = always
    complements: npt.NDArray[np.int64]  # (items, complements_per_item)
    stock_prob: npt.NDArray[np.float64]  # (items,)


def item_side(spec: SyntheticSpec) -> ItemSide:
    """The items every merchant draws from, derived from ``spec.seed`` alone."""
    rng = np.random.default_rng(np.random.SeedSequence(spec.seed).spawn(3)[0])
    n = spec.num_items
    factors = rng.standard_normal((n, spec.latent_dim))
    popularity_rank = rng.permutation(n) + 1
    log_pop = -spec.popularity_exponent * np.log(popularity_rank)
    pop_percentile = 1.0 - (popularity_rank - 1) / n  # 1 = most popular
    stock_prob = spec.min_stock + (1.0 - spec.min_stock) * pop_percentile**spec.stock_curve
    trend = rng.normal(0.0, spec.popularity_drift, n) if spec.popularity_drift else np.zeros(n)
    launch = np.full(n, -np.inf)
    new = rng.random(n) < spec.new_item_share
    new[np.argmax(log_pop)] = False  # the top item is always there: no user starts empty-handed
    launch[new] = rng.uniform(0.0, spec.span_days * DAY, int(new.sum()))
    weights = np.exp(log_pop) / np.exp(log_pop).sum()
    complements = rng.choice(n, size=(n, spec.complements_per_item), p=weights)
    return ItemSide(factors, log_pop, trend, launch, complements.astype(np.int64), stock_prob)


def merchant_sizes(spec: SyntheticSpec, rng: np.random.Generator) -> npt.NDArray[np.int64]:
    """Users per merchant: log-uniform on ``merchant_size_range``, else a Dirichlet split."""
    if spec.merchant_size_range != (0, 0):
        low, high = spec.merchant_size_range
        drawn = np.exp(rng.uniform(np.log(low), np.log(high), spec.num_merchants))
        return np.clip(np.round(drawn), low, high).astype(np.int64)
    shares = rng.dirichlet(np.full(spec.num_merchants, spec.merchant_size_concentration))
    return np.maximum(2, np.round(shares * spec.num_users)).astype(np.int64)


def generate_federation(spec: SyntheticSpec) -> Interactions:
    """Generate the event log of a whole federation, with a ``merchant_id`` column."""
    _, size_seq, merchant_seq = np.random.SeedSequence(spec.seed).spawn(3)
    items = item_side(spec)
    sizes = merchant_sizes(spec, np.random.default_rng(size_seq))

    parts = [
        _merchant_events(spec, items, m, int(sizes[m]), np.random.default_rng(m_seq))
        for m, m_seq in enumerate(merchant_seq.spawn(spec.num_merchants))
    ]
    item_keys = np.asarray([f"item-{i:06d}" for i in range(spec.num_items)], dtype=object)
    return Interactions(
        user_id=np.concatenate([p.user_id for p in parts]),
        item_id=item_keys[np.concatenate([p.item_id for p in parts]).astype(np.int64)],
        timestamp=np.concatenate([p.timestamp for p in parts]),
        event_type=np.concatenate([p.event_type for p in parts if p.event_type is not None]),
        value=np.concatenate([p.value for p in parts if p.value is not None]),
        merchant_id=np.concatenate([p.merchant_id for p in parts if p.merchant_id is not None]),
    )


def _merchant_events(
    spec: SyntheticSpec, items: ItemSide, m: int, num_users: int, rng: np.random.Generator
) -> Interactions:
    """One merchant's users, simulated event by event (all users advance together)."""
    dim = spec.latent_dim
    scale = spec.temperature * np.sqrt(dim)
    centre = rng.standard_normal(dim) * spec.merchant_taste_shift  # (dim,)
    specialty = 1.0 / (1.0 + np.exp(-(items.factors @ centre) / np.sqrt(dim)))  # (items,)
    stocked = rng.random(spec.num_items) < np.clip(items.stock_prob * (0.5 + specialty), 0, 1)
    stocked[np.argmax(items.log_pop)] = True
    catalog = np.flatnonzero(stocked)
    position = np.full(spec.num_items, -1)
    position[catalog] = np.arange(len(catalog))
    factors = items.factors[catalog]  # (catalog, dim)
    log_pop, trend, launch = (items.log_pop[catalog], items.trend[catalog], items.launch[catalog])

    base = centre + rng.standard_normal((num_users, dim))  # (users, dim)
    drift = np.zeros_like(base)
    num_events = np.minimum(1 + rng.poisson(spec.mean_events - 1.0, num_users), len(catalog))
    span = spec.span_days * DAY
    start = rng.random(num_users) * np.maximum(0.0, span - num_events * spec.mean_gap_days * DAY)
    longest = int(num_events.max())
    gaps = rng.exponential(spec.mean_gap_days * DAY, (num_users, longest)).astype(np.int64) + 1
    times = start.astype(np.int64)[:, None] + np.cumsum(gaps, axis=1)  # (users, longest)
    chosen = np.full((num_users, longest), -1)  # catalog positions
    affinity = np.zeros((num_users, longest))
    had = np.zeros((num_users, len(catalog)), dtype=bool)
    innovation = np.sqrt(1.0 - spec.taste_memory**2) * spec.taste_drift

    for k in range(longest):
        act = np.flatnonzero(num_events > k)
        now = times[act, k].astype(np.float64)
        taste = base[act] + drift[act]
        intent = taste.copy()
        if k > 0:
            intent += spec.sequence_strength * factors[chosen[act, k - 1]]
        logits = intent @ factors.T / scale + log_pop  # (active, catalog)
        logits += np.clip(now / span, 0.0, 1.0)[:, None] * trend - 0.5 * trend
        logits[had[act] | (launch[None, :] > now[:, None])] = -np.inf
        pick = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)
        stuck = ~np.isfinite(logits.max(axis=1))  # nothing new is left: only a repeat fits
        if k > 0:
            last = catalog[chosen[act, k - 1]]
            partner = items.complements[last, rng.integers(0, spec.complements_per_item, len(act))]
            slot = position[partner]
            usable = slot >= 0
            usable[usable] &= ~had[act[usable], slot[usable]]
            usable[usable] &= launch[slot[usable]] <= now[usable]
            follow = usable & (rng.random(len(act)) < spec.copurchase_prob)
            pick[follow] = slot[follow]
            repeat = stuck | (rng.random(len(act)) < spec.repeat_prob)
            back = np.minimum(rng.geometric(0.5, len(act)), min(k, RECENT_REPEATS))
            pick[repeat] = chosen[act[repeat], k - back[repeat]]
        chosen[act, k] = pick
        had[act, pick] = True
        affinity[act, k] = np.einsum("ud,ud->u", taste, factors[pick]) / np.sqrt(dim)
        drift[act] = spec.taste_memory * drift[act] + innovation * rng.standard_normal(taste.shape)

    mask = np.arange(longest)[None, :] < num_events[:, None]
    user_index = np.broadcast_to(np.arange(num_users)[:, None], mask.shape)[mask]
    strength = 1.0 / (1.0 + np.exp(-2.0 * affinity[mask]))
    mix = np.asarray(spec.event_mix)
    p_purchase = np.clip(mix[2] * 2.0 * strength, 0.0, 1.0)
    p_cart = np.clip(mix[1] * (1.0 - p_purchase) / max(1e-9, 1.0 - mix[2]), 0.0, 1.0)
    draw = rng.random(len(strength))
    kinds = np.where(
        draw < p_purchase, "purchase", np.where(draw < p_purchase + p_cart, "cart", "view")
    )
    ratings = np.clip(np.round(1.0 + 4.0 * strength + rng.normal(0.0, 0.5, len(strength))), 1, 5)
    user_keys = np.asarray([f"{merchant_name(m)}-u{u:05d}" for u in range(num_users)], object)
    return Interactions(
        user_id=user_keys[user_index],
        item_id=catalog[chosen[mask]],
        timestamp=START_TIMESTAMP + times[mask],
        event_type=kinds.astype(object),
        value=ratings.astype(np.float32),
        merchant_id=np.full(len(strength), merchant_name(m), dtype=object),
    )
