"""The coordinator's update bounds: the formula by hand, the checks, and honest merchants inside.

The bound is Adam's (every merchant steps Adam): one step moves a coordinate at
most ``lr * B_t``; ``T`` fresh steps at most ``lr * S(T)``; the L2 norm of an
update over ``d`` parameters at most ``lr * sqrt(d) * S(T)``, accepted with a 5 %
margin. Honest merchants, trained with the real private and non-private code
and the real noise, stay inside it.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from client.training.loop import NonPrivateStep, train_local
from client.training.private import PrivateStep, private_population, train_private
from common.compression import CompressionConfig, compress, decompress
from common.config import TrainConfig
from common.data.catalog import ItemCatalog
from common.data.dataset import UserItemData, build_user_item_data
from common.models import ModelConfig, build_model
from common.models.base import Recommender
from common.privacy.accountant import PrivacyPlan, plan_privacy
from common.privacy.config import PrivacyConfig
from server.rounds.update_bounds import (
    ADAM_BETAS,
    MARGIN,
    UpdateBounds,
    adam_path_bound,
    adam_step_bound,
    check_global,
    check_secure_aggregate,
    check_update,
    derive_bounds,
    max_local_steps,
)
from simulations.synthetic import SyntheticSpec, generate_federation

USER_DP = PrivacyConfig(unit="user", target_epsilon=3.0, delta=1e-5, count_share=0.0)


def _bounds(max_norm: float = 1.0, *, uniform: bool = True, max_weight: int = 1000) -> UpdateBounds:
    return UpdateBounds(
        max_norm=max_norm, uniform_weights=uniform, max_weight=max_weight, derivation="test"
    )


# --- the formula, by hand --------------------------------------------------------------------


def test_adam_step_bound_by_hand() -> None:
    # t = 1: m/sqrt(v) = g/|g| after bias correction: exactly one lr.
    assert adam_step_bound(1) == pytest.approx(1.0)
    # t = 2, betas (0.9, 0.999), g = 0.81 / 0.999:
    # 0.1 / (1 - 0.81) * sqrt((1 - 0.999^2) / 0.001) * sqrt(1 + g)
    g = 0.81 / 0.999
    by_hand = 0.1 / 0.19 * math.sqrt(0.001999 / 0.001) * math.sqrt(1 + g)
    assert by_hand == pytest.approx(1.0013579, abs=1e-7)
    assert adam_step_bound(2) == pytest.approx(by_hand, rel=1e-12)
    # The limit: (1 - b1) / sqrt(1 - b2) / sqrt(1 - b1^2 / b2) = 7.2703...
    limit = 0.1 / math.sqrt(0.001) / math.sqrt(1 - g)
    assert limit == pytest.approx(7.2703, abs=1e-4)
    assert adam_step_bound(10**6) == pytest.approx(limit, rel=1e-12)
    assert adam_path_bound(2) == pytest.approx(1.0 + by_hand, rel=1e-12)
    # Past 100,000 steps the sum grows by the limit per step.
    assert adam_path_bound(100_010) - adam_path_bound(100_000) == pytest.approx(10 * limit)
    with pytest.raises(ValueError, match="count from 1"):
        adam_step_bound(0)


def test_local_steps_come_from_the_settings_and_the_largest_merchant() -> None:
    train = TrainConfig(local_epochs=2, batch_users=64)
    # No DP: one step per batch of users, local-epochs passes: 2 x ceil(1000 / 64) = 32.
    assert max_local_steps(train, PrivacyConfig(), max_examples=1000) == 32
    # DP-SGD: ceil(local-epochs / q) with q = batch / N: ceil(2 x 1000 / 64) = 32 (31.25 up).
    assert max_local_steps(train, USER_DP, max_examples=1000) == 32
    assert max_local_steps(train, USER_DP, max_examples=10) == 2  # q = 1: one step per epoch
    # local-steps fixes T exactly (whatever the merchant's size), for DP-SGD ...
    fixed = dataclasses.replace(USER_DP, local_steps=7)
    assert max_local_steps(train, fixed, max_examples=10**8) == 7
    # ... and for plain local training, which then takes exactly that many steps too
    assert max_local_steps(train, PrivacyConfig(local_steps=7), max_examples=10**8) == 7
    client = PrivacyConfig(unit="client", target_epsilon=3.0, local_steps=7)
    assert max_local_steps(train, client, max_examples=1000) == 7
    device = dataclasses.replace(client, device_epsilon=1.0)
    assert max_local_steps(train, device, max_examples=1000) == 7


def test_derived_bound_on_hand_computed_values() -> None:
    # lr 0.1, d = 100 parameters, T = local-steps = 2 under user-level DP:
    # 1.05 x 0.1 x sqrt(100) x (B_1 + B_2) = 1.05 x (1 + 1.0013579) = 2.10142...
    bounds = derive_bounds(
        train=TrainConfig(learning_rate=0.1),
        privacy=dataclasses.replace(USER_DP, local_steps=2),
        num_parameters=100,
        max_examples=10**6,
    )
    assert bounds.max_norm == pytest.approx(1.05 * 0.1 * 10 * 2.0013579, rel=1e-6)
    assert bounds.max_norm == pytest.approx(2.1014258, rel=1e-6)
    assert bounds.uniform_weights and "T = 2 Adam steps" in bounds.derivation
    # Without privacy: weighted by num-examples up to max-merchant-examples; T from the cap.
    plain = derive_bounds(
        train=TrainConfig(learning_rate=0.02, local_epochs=1, batch_users=100),
        privacy=PrivacyConfig(),
        num_parameters=400,
        max_examples=250,
    )  # T = ceil(250 / 100) = 3
    assert plain.max_norm == pytest.approx(MARGIN * 0.02 * 20 * adam_path_bound(3))
    assert not plain.uniform_weights and plain.max_weight == 250
    # The operator's own bound replaces the derived one.
    own = derive_bounds(
        train=TrainConfig(),
        privacy=PrivacyConfig(),
        num_parameters=400,
        max_examples=250,
        max_update_norm=41.7,
    )
    assert own.max_norm == 41.7 and "operator" in own.describe()


# --- the checks ----------------------------------------------------------------------------


def _global() -> dict[str, np.ndarray]:
    return {
        "item_embedding.weight": np.arange(12, dtype=np.float32).reshape(6, 2) / 10,
        "item_bias.weight": np.zeros((6, 1), dtype=np.float32),
    }


def _plus(reference: dict[str, np.ndarray], value: float) -> dict[str, np.ndarray]:
    return {n: (a + np.float32(value)).astype(np.float32) for n, a in reference.items()}


def test_nan_inf_and_huge_updates_are_rejected_with_their_reason() -> None:
    reference = _global()
    nan = _plus(reference, 0.01)
    nan["item_embedding.weight"][[0, 3], 1] = np.nan
    verdict = check_update(nan, reference, weight=1, bounds=_bounds())
    assert not verdict.accepted
    assert verdict.reason == "non-finite values in item_embedding.weight (2 NaN)"

    inf = _plus(reference, 0.01)
    inf["item_bias.weight"][5, 0] = -np.inf
    inf["item_embedding.weight"][1, 1] = np.nan
    verdict = check_update(inf, reference, weight=1, bounds=_bounds())
    assert verdict.reason == (
        "non-finite values in item_bias.weight (1 Inf); item_embedding.weight (1 NaN)"
    )

    huge = {n: np.full_like(a, 1e6) for n, a in reference.items()}
    verdict = check_update(huge, reference, weight=1e6, bounds=_bounds(41.7))
    assert not verdict.accepted
    # ||1e6 - reference|| over 18 values: sqrt(sum((1e6 - x)^2)) = 4.2426e6
    expected = math.sqrt(sum(float((1e6 - x) ** 2) for a in reference.values() for x in a.flat))
    assert verdict.norm == pytest.approx(expected)
    assert verdict.reason == f"update norm {expected:.4g} > bound 41.7"


def test_an_update_within_the_bound_is_accepted_with_its_norm() -> None:
    reference = _global()
    verdict = check_update(_plus(reference, 0.5), reference, weight=1, bounds=_bounds(2.2))
    assert verdict.accepted and verdict.weight == 1.0
    assert verdict.norm == pytest.approx(0.5 * math.sqrt(18), rel=1e-6)  # 2.1213 <= 2.2
    verdict = check_update(_plus(reference, 0.6), reference, weight=1, bounds=_bounds(2.2))
    assert not verdict.accepted and verdict.reason.startswith("update norm 2.546 > bound 2.2")


def test_weights_uniform_under_privacy_checked_without() -> None:
    reference, update = _global(), _plus(_global(), 0.01)
    # Privacy on: whatever is reported, the weight is 1.
    for reported in (1, 1e6, -3, float("nan"), None):
        verdict = check_update(update, reference, weight=reported, bounds=_bounds())
        assert verdict.accepted and verdict.weight == 1.0
    # Privacy off: a positive finite integer up to the cap.
    plain = _bounds(uniform=False, max_weight=1000)
    assert check_update(update, reference, weight=250, bounds=plain).weight == 250.0
    assert check_update(update, reference, weight=1000.0, bounds=plain).weight == 1000.0
    reasons: dict[object, str] = {
        0: "num-examples 0 is not positive",
        -4: "num-examples -4 is not positive",
        2.5: "num-examples 2.5 is not a finite integer",
        float("inf"): "num-examples inf is not a finite integer",
        float("nan"): "num-examples nan is not a finite integer",
        1e6: "num-examples 1e+06 > max-merchant-examples 1000",
        True: "num-examples True is not a number",
        "7": "num-examples '7' is not a number",
        None: "num-examples None is not a number",
    }
    for weight, reason in reasons.items():
        verdict = check_update(update, reference, weight=weight, bounds=plain)
        assert not verdict.accepted and verdict.reason == reason, weight


def test_every_problem_of_a_reply_is_named_together() -> None:
    reference = _global()
    bad = {n: np.full_like(a, 1e6) for n, a in reference.items()}
    bad["item_bias.weight"][0, 0] = np.nan
    verdict = check_update(bad, reference, weight=0, bounds=_bounds(uniform=False))
    assert verdict.reason == (
        "non-finite values in item_bias.weight (1 NaN); num-examples 0 is not positive"
    )


def test_other_arrays_or_shapes_are_rejected() -> None:
    reference = _global()
    missing = {"item_embedding.weight": reference["item_embedding.weight"]}
    assert check_update(missing, reference, weight=1, bounds=_bounds()).reason == (
        "arrays differ from the global model's (missing ['item_bias.weight'], extra [])"
    )
    reshaped = dict(reference, **{"item_bias.weight": np.zeros((3, 2), np.float32)})
    assert check_update(reshaped, reference, weight=1, bounds=_bounds()).reason == (
        "item_bias.weight has shape (3, 2), the global model (6, 1)"
    )
    assert check_global(reshaped, reference) == (
        "item_bias.weight has shape (3, 2), the global model (6, 1)"
    )
    assert check_global(_plus(reference, 3.0), reference) == ""
    assert check_global(_plus(reference, np.inf), reference).startswith("non-finite values")


def test_secure_aggregate_must_be_finite_in_the_clipping_range_and_within_the_bound() -> None:
    reference = _global()
    bounds = _bounds(max_norm=10.0)

    def check(arrays: dict[str, np.ndarray]) -> str:
        return check_secure_aggregate(
            arrays, reference, bounds=bounds, clipping_range=8.0, quantization_range=1 << 22
        )

    assert check(_plus(reference, 2.0)) == ""  # 2 per value, norm 8.49 <= 10
    assert check(_plus(reference, 8.0)).startswith("mean update norm 33.94 > bound 10")
    assert check(_plus(reference, 9.0)).startswith(
        "mean delta value 9 outside +-secagg-clip-range 8"
    )
    assert check(_plus(reference, np.nan)).startswith("non-finite values in item_bias.weight")


# --- honest merchants stay inside ----------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    steps=st.integers(min_value=1, max_value=40),
    lr=st.sampled_from([1e-3, 0.02, 0.1]),
    grads=st.lists(
        st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_subnormal=False),
        min_size=40 * 3,
        max_size=40 * 3,
    ),
)
def test_adam_never_moves_a_coordinate_further_than_lr_times_s_t(
    steps: int, lr: float, grads: list[float]
) -> None:
    """Torch's own Adam, any gradients (signs, scales, zeros): |delta| <= lr S(T) per value."""
    param = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([param], lr=lr)
    sequence = torch.tensor(grads, dtype=torch.float64).reshape(40, 3)
    for t in range(steps):
        param.grad = sequence[t].clone()
        optimizer.step()
    assert float(param.detach().abs().max()) <= lr * adam_path_bound(steps) * (1 + 1e-9)


def test_adam_bound_is_nearly_reached_by_a_constant_gradient() -> None:
    """The bound is not loose for few steps: a constant push moves lr per step, S(T) ~ T."""
    param = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([param], lr=0.1)
    for _ in range(10):
        param.grad = torch.full((4,), -3.0, dtype=torch.float64)
        optimizer.step()
    moved = float(param.detach().norm())
    assert moved == pytest.approx(0.1 * 2 * 10, rel=1e-6)  # sqrt(4) x 10 steps x lr
    assert moved <= 0.1 * 2 * adam_path_bound(10)  # S(10) = 10.17
    assert moved / (0.1 * 2 * adam_path_bound(10)) > 0.98


def test_merchants_step_adam_with_the_default_betas_the_bound_assumes() -> None:
    data, model, plan, _ = _private_setup()
    private = PrivateStep(model, TrainConfig(), plan, generator=torch.Generator().manual_seed(0))
    plain = NonPrivateStep(model, TrainConfig())
    for optimizer in (private.optimizer.original_optimizer, plain.optimizer):
        assert type(optimizer) is torch.optim.Adam
        for group in optimizer.param_groups:
            assert tuple(group["betas"]) == ADAM_BETAS
            assert group["weight_decay"] == 0 and not group["amsgrad"]
            assert not group["maximize"]


def _private_setup(
    *, batch_users: int = 8, learning_rate: float = 0.1
) -> tuple[UserItemData, Recommender, PrivacyPlan, TrainConfig]:
    events = generate_federation(SyntheticSpec(num_merchants=1, num_users=40, num_items=30, seed=3))
    data = build_user_item_data(events, ItemCatalog.from_keys(events.item_id))
    model = build_model(
        ModelConfig(embedding_dim=4),
        num_users=data.num_users,
        num_items=data.num_items,
        generator=torch.Generator().manual_seed(0),
    )
    train = TrainConfig(batch_users=batch_users, local_epochs=2, learning_rate=learning_rate)
    plan = plan_privacy(
        USER_DP,
        population=len(private_population(data, "user")),
        batch=train.batch_users,
        local_epochs=train.local_epochs,
        rounds=3,
    )
    return data, model, plan, train


def _update_norm(model: Recommender, start: dict[str, torch.Tensor]) -> float:
    shared = model.shared_parameters()
    return math.sqrt(
        sum(
            float((shared[n].detach().double() - s.double()).pow(2).sum()) for n, s in start.items()
        )
    )


@pytest.mark.parametrize("noise", ["calibrated", "heavy", "none"])
def test_honest_private_updates_never_exceed_the_bound(noise: str) -> None:
    """The real DP-SGD round (Poisson sampling, clipping, Opacus noise, Adam), many noise draws."""
    data, model, plan, train = _private_setup()
    sigma = {"calibrated": plan.noise_multiplier, "heavy": 50.0, "none": 0.0}[noise]
    plan = dataclasses.replace(plan, noise_multiplier=sigma)
    start = {n: p.detach().clone() for n, p in model.shared_parameters().items()}
    d = sum(int(p.numel()) for p in start.values())
    bounds = derive_bounds(
        train=train, privacy=USER_DP, num_parameters=d, max_examples=plan.population
    )
    assert plan.steps_per_round == max_local_steps(
        train, USER_DP, max_examples=plan.population
    )  # the coordinator's T is the merchant's own (ceil(2 / (8 / 40)) = 10)
    norms = []
    for seed in range(25):
        model.load_shared({n: s.clone() for n, s in start.items()})
        train_private(
            model,
            data,
            train,
            plan,
            rng=np.random.default_rng(seed),
            generator=torch.Generator().manual_seed(1000 + seed),
        )
        norms.append(_update_norm(model, start))
    assert max(norms) <= bounds.max_norm
    assert min(norms) > 0  # they did move


def test_honest_plain_updates_never_exceed_the_bound() -> None:
    data, model, _, train = _private_setup(batch_users=4, learning_rate=0.05)
    start = {n: p.detach().clone() for n, p in model.shared_parameters().items()}
    d = sum(int(p.numel()) for p in start.values())
    bounds = derive_bounds(
        train=train, privacy=PrivacyConfig(), num_parameters=d, max_examples=data.num_train
    )
    for seed in range(10):
        model.load_shared({n: s.clone() for n, s in start.items()})
        stats = train_local(model, data, train, rng=np.random.default_rng(seed))
        assert stats.steps <= max_local_steps(train, PrivacyConfig(), max_examples=data.num_train)
        assert _update_norm(model, start) <= bounds.max_norm


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32 - 1), kind=st.sampled_from(["int8", "topk"]))
def test_a_decoded_compressed_update_keeps_every_value_within_the_per_value_bound(
    seed: int, kind: str
) -> None:
    """The L2 bound is sqrt(d) x a per-value bound, which compression's decoding keeps."""
    rng = np.random.default_rng(seed)
    reference = {"w": rng.normal(size=(20, 8)).astype(np.float32)}
    per_value = 0.3
    trained = {"w": reference["w"] + rng.uniform(-per_value, per_value, size=(20, 8))}
    trained["w"] = trained["w"].astype(np.float32)
    config = CompressionConfig(kind=kind, topk_fraction=0.2)
    decoded = decompress(compress(trained, reference, config), reference, config)
    delta = decoded["w"].astype(np.float64) - reference["w"]
    assert float(np.abs(delta).max()) <= per_value * (1 + 1e-5)


def test_an_honest_statistics_release_is_within_its_bound_and_a_scaled_one_is_not():
    """model=ease: the update is the merchant's noisy Gram; the bound is derived, not guessed."""
    from common.privacy.cooccurrence import noisy_gram
    from simulations.synthetic import SyntheticSpec, generate_federation

    events = generate_federation(SyntheticSpec(num_merchants=1, num_users=300, num_items=40))
    data = build_user_item_data(events, ItemCatalog.from_keys(events.item_id))
    items = np.arange(data.num_items)
    sigma = 3.0
    bounds = derive_bounds(
        train=TrainConfig(),
        privacy=PrivacyConfig(unit="user", target_epsilon=1.0),
        num_parameters=len(items) ** 2 + len(items),
        max_examples=data.num_users,
        statistics_noise=sigma,
    )
    assert "statistics release" in bounds.derivation
    size = len(items) ** 2 + len(items)
    expected = 1.05 * (data.num_users + math.sqrt(2) * sigma * (math.sqrt(size) + 12))
    assert bounds.max_norm == pytest.approx(expected)
    norms = [
        np.linalg.norm(
            noisy_gram(data, items, cap=200, noise_multiplier=sigma, rng=np.random.default_rng(s))
        )
        for s in range(20)
    ]
    assert max(norms) <= bounds.max_norm
    assert max(norms) > 0.1 * bounds.max_norm  # not vacuous at this merchant's size
