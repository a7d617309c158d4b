"""Opacus-backed accounting checked against Google's independent dp-accounting."""

import dp_accounting
import pytest
from dp_accounting import rdp

from common.errors import ConfigError
from common.privacy.accounting import (
    RDP_ORDERS,
    PrivacyEvent,
    calibrate_noise,
    epsilon_of,
    gaussian_noise_multiplier,
    smallest_noise,
)


def _dp_accounting_epsilon(events, delta):
    accountant = rdp.RdpAccountant(orders=list(RDP_ORDERS))
    for e in events:
        gaussian = dp_accounting.GaussianDpEvent(e.noise_multiplier)
        if e.sample_rate == 1.0:
            accountant.compose(gaussian, e.steps)
        else:
            accountant.compose(
                dp_accounting.PoissonSampledDpEvent(e.sample_rate, gaussian), e.steps
            )
    return accountant.get_epsilon(delta)


@pytest.mark.parametrize(
    "events",
    [
        [PrivacyEvent(1.1, 0.01, 1000)],
        [PrivacyEvent(14.0, 1.0, 1), PrivacyEvent(2.5, 0.1, 60), PrivacyEvent(2.5, 0.1, 60)],
        [PrivacyEvent(0.8, 0.3, 5), PrivacyEvent(5.0, 1.0, 2)],
    ],
)
def test_rdp_epsilon_matches_dp_accounting(events):
    ours = epsilon_of(events, delta=1e-6, accountant="rdp")
    assert ours == pytest.approx(_dp_accounting_epsilon(events, 1e-6), rel=1e-6)


def test_no_events_cost_nothing():
    assert epsilon_of([], delta=1e-6, accountant="rdp") == 0.0


def test_calibrated_noise_hits_the_target_from_below():
    prior = [PrivacyEvent(14.0, 1.0, 1)]
    sigma = calibrate_noise(
        target_epsilon=3.0, delta=1e-6, sample_rate=0.1, steps=200, accountant="rdp", prior=prior
    )
    spent = epsilon_of([*prior, PrivacyEvent(sigma, 0.1, 200)], delta=1e-6, accountant="rdp")
    assert 3.0 * (1 - 1e-3) <= spent <= 3.0
    # A little less noise would overspend: sigma is the smallest that fits.
    over = epsilon_of([*prior, PrivacyEvent(sigma * 0.99, 0.1, 200)], delta=1e-6, accountant="rdp")
    assert over > 3.0


def test_prv_is_available_and_tighter_than_rdp():
    events = [PrivacyEvent(1.0, 0.05, 400)]
    prv = epsilon_of(events, delta=1e-6, accountant="prv")
    assert 0 < prv < epsilon_of(events, delta=1e-6, accountant="rdp")


def test_gaussian_release_noise_for_a_small_share():
    sigma = gaussian_noise_multiplier(epsilon=0.3, delta=1e-6, accountant="rdp")
    assert epsilon_of([PrivacyEvent(sigma, 1.0, 1)], delta=1e-6, accountant="rdp") <= 0.3
    assert sigma > 10  # a tiny epsilon for one release needs a lot of noise


def test_budget_used_up_before_training_is_refused():
    with pytest.raises(ConfigError, match="already used up"):
        calibrate_noise(
            target_epsilon=0.1,
            delta=1e-6,
            sample_rate=0.1,
            steps=10,
            accountant="rdp",
            prior=[PrivacyEvent(1.0, 1.0, 1)],
        )


def test_smallest_noise_bisects_any_decreasing_cost_to_its_tolerance():
    calls = []

    def cost(sigma):  # epsilon = 10 / sigma: the exact answer for a target of 2 is sigma = 5
        calls.append(sigma)
        return 10.0 / sigma

    sigma = smallest_noise(cost, target_epsilon=2.0, too_small="unused", rel_tol=1e-3)
    assert 5.0 <= sigma <= 5.0 / (1 - 1e-3)  # spends at most the target, within 0.1% of it
    assert calls[:4] == [1.0, 2.0, 4.0, 8.0]  # doubling from 1 until the target holds
    with pytest.raises(ConfigError, match="needs more noise than allowed"):
        smallest_noise(
            lambda s: 1e9 / s, target_epsilon=1.0, too_small="needs more noise than allowed"
        )


def test_the_accountant_table_is_the_list_users_choose_from():
    from common.privacy.accounting import EPSILON_OPTIONS
    from common.privacy.config import ACCOUNTANTS

    assert tuple(EPSILON_OPTIONS) == ACCOUNTANTS
    with pytest.raises(ConfigError, match="Unknown accountant 'gdp': expected one of rdp, prv"):
        epsilon_of([PrivacyEvent(1.0, 0.1, 10)], delta=1e-6, accountant="gdp")
