"""The count top-up: when the federation trains nothing, the rest of epsilon goes to counts."""

import dataclasses

import dp_accounting
import numpy as np
import pytest
from dp_accounting import rdp

from common.models.prior import ItemPrior
from common.privacy.accountant import (
    EVENT_COUNTS_TOP_UP,
    EVENT_ITEM_COUNTS,
    CountsOnly,
    PrivacyBudgetExceeded,
    PrivacyRefused,
)
from common.privacy.accounting import RDP_ORDERS, gaussian_noise_multiplier
from common.privacy.counts import most_counted
from common.privacy.records import COUNT_SAMPLING
from tests.client.test_ease_merchant import PLAN, _global_with, _merchant
from tests.client.test_private_merchant import data  # noqa: F401


def _reserves(merchant):
    return [e.body for e in merchant.ledger.ledger.entries if e.kind == "reserve"]


def test_counts_and_top_up_spend_the_target_as_one_gaussian_release_at_the_whole_epsilon(
    tmp_path,
    data,  # noqa: F811
):
    merchant = _merchant(tmp_path, data)
    first = merchant.release_item_counts(PLAN, run="r")
    top_up = merchant.release_counts_top_up(PLAN, run="r")
    sigma_c, sigma_t = first.noise_multiplier, top_up.noise_multiplier
    assert sigma_c == merchant.account(PLAN).plan.count_noise_multiplier
    independent = rdp.RdpAccountant(orders=list(RDP_ORDERS))
    independent.compose(dp_accounting.GaussianDpEvent(sigma_c))
    independent.compose(dp_accounting.GaussianDpEvent(sigma_t))
    assert top_up.privacy.epsilon == pytest.approx(independent.get_epsilon(1e-5), rel=0.01)
    assert top_up.privacy.epsilon == pytest.approx(2.0, rel=0.01)  # the target, no more
    # Gaussians compose exactly: the pair is worth one release at the whole epsilon
    whole = gaussian_noise_multiplier(epsilon=2.0, delta=1e-5, accountant="rdp")
    assert (sigma_c**-2 + sigma_t**-2) ** -0.5 == pytest.approx(whole, rel=0.01)
    assert not np.allclose(first.counts, top_up.counts)  # fresh noise, not the same draw
    kinds = [(r["release"], r["sampling"], r["max_grad_norm"]) for r in _reserves(merchant)]
    assert kinds == [
        (EVENT_ITEM_COUNTS, COUNT_SAMPLING, 1.0),
        (EVENT_COUNTS_TOP_UP, COUNT_SAMPLING, 1.0),
    ]
    assert _reserves(merchant)[-1]["noise_multiplier"] == pytest.approx(sigma_t)
    assert _reserves(merchant)[-1]["released"] == ["counts"]


def test_after_a_top_up_a_second_top_up_or_any_training_is_refused(
    tmp_path,
    data,  # noqa: F811
):
    merchant = _merchant(tmp_path, data)
    counts = merchant.release_item_counts(PLAN, run="r").counts
    merchant.release_counts_top_up(PLAN, run="r")
    spent = merchant.account(PLAN).epsilon()
    with pytest.raises(PrivacyRefused, match="follows exactly one item-count release"):
        merchant.release_counts_top_up(PLAN, run="r")
    prior = ItemPrior(counts=counts, trained=most_counted(counts, 20))
    with pytest.raises(PrivacyBudgetExceeded):
        merchant.train(
            _global_with(prior.trained, data.num_items), PLAN, server_round=1, prior=prior, run="r"
        )
    assert merchant.account(PLAN).epsilon() == spent  # nothing more was spent


def test_a_top_up_needs_the_first_counts_and_no_training_before_it(
    tmp_path,
    data,  # noqa: F811
):
    merchant = _merchant(tmp_path, data)
    with pytest.raises(PrivacyRefused, match="follows exactly one item-count release"):
        merchant.release_counts_top_up(PLAN, run="r")
    counts = merchant.release_item_counts(PLAN, run="r").counts
    prior = ItemPrior(counts=counts, trained=most_counted(counts, 20))
    merchant.train(
        _global_with(prior.trained, data.num_items), PLAN, server_round=1, prior=prior, run="r"
    )
    with pytest.raises(PrivacyRefused, match="already released training updates"):
        merchant.release_counts_top_up(PLAN, run="r")
    refusal = merchant.ledger.ledger.entries[-1]  # written before it was raised
    assert refusal.kind == "refusal" and refusal.body["release"] == EVENT_COUNTS_TOP_UP


def test_a_counts_only_merchant_has_nothing_to_top_up_and_says_so_in_its_ledger(
    tmp_path,
    data,  # noqa: F811
):
    small = dataclasses.replace(
        PLAN, privacy=dataclasses.replace(PLAN.privacy, count_only_below=10_000.0)
    )
    merchant = _merchant(tmp_path, data)
    spent = merchant.release_item_counts(small, run="r").privacy.epsilon
    with pytest.raises(CountsOnly, match="count-only-below"):
        merchant.release_counts_top_up(small, run="r")
    refusal = merchant.ledger.ledger.entries[-1]
    assert refusal.kind == "refusal" and refusal.body["release"] == EVENT_COUNTS_TOP_UP
    assert merchant.account(small).epsilon() == pytest.approx(spent)
