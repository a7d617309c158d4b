"""Epsilon per release costs the same in round 200 as in round 1, and equals Opacus's (issue 20)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.privacy import composition
from common.privacy.accounting import PrivacyEvent, epsilon_of, opacus_epsilon

COUNTS = PrivacyEvent(14.04, 1.0, 1)


def _merchant_history(rounds, *, sigma=6.445, q=0.8605, steps=2):
    """What a merchant's account holds after ``rounds``: item counts, then one event a round."""
    return [COUNTS] + [PrivacyEvent(sigma, q, steps)] * rounds


def _merged(events):
    """Events with equal (sigma, q) merged into one, steps summed (first-seen order)."""
    steps = {}
    for e in events:
        key = (e.noise_multiplier, e.sample_rate)
        steps[key] = steps.get(key, 0) + e.steps
    return [PrivacyEvent(sigma, q, n) for (sigma, q), n in steps.items()]


@pytest.mark.parametrize(
    "events",
    [
        _merchant_history(1),
        _merchant_history(10, q=1.0, sigma=5.234, steps=1),
        _merchant_history(40, sigma=2.0, q=0.2, steps=2),
        [COUNTS, PrivacyEvent(2.0, 0.1, 3), PrivacyEvent(3.0, 0.05, 3), PrivacyEvent(2.0, 0.1, 3)],
        [PrivacyEvent(1.1, 0.01, 1000), PrivacyEvent(1.1, 0.01, 0), PrivacyEvent(1.1, 0.01, 7)],
    ],
)
@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_epsilon_is_opacus_bit_for_bit(events, accountant):
    ours = epsilon_of(events, delta=1e-6, accountant=accountant)
    assert ours == opacus_epsilon(events, delta=1e-6, accountant=accountant)


events_strategy = st.lists(
    st.builds(
        PrivacyEvent,
        noise_multiplier=st.sampled_from([0.9, 2.0, 5.234, 14.04]),
        sample_rate=st.sampled_from([0.01, 0.2, 0.8605, 1.0]),
        steps=st.integers(min_value=0, max_value=20),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=25, deadline=None)
@given(events=events_strategy)
def test_merged_rdp_equals_unmerged_rdp(events):
    # RDP adds, so merging equal (sigma, q) events is exact up to rounding.
    unmerged = epsilon_of(events, delta=1e-6, accountant="rdp")
    merged = epsilon_of(_merged(events), delta=1e-6, accountant="rdp")
    assert merged == pytest.approx(unmerged, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize(
    ("events", "gap"),
    [
        (_merchant_history(10), 1e-10),  # epsilon 2.8: the figure a merchant sees
        (_merchant_history(10, sigma=0.8, q=0.6392, steps=2), 3e-9),  # epsilon 29
    ],
)
def test_merging_moves_prv_so_prv_keeps_the_history(events, gap):
    # Measured: merging moves PRV by 6e-12 relative at epsilon 2.8, 1.8e-9 at epsilon 29 and
    # 1.2e-8 at epsilon 75 (40 rounds at sigma 0.8), beyond 1e-9: so epsilon_of keeps the
    # history's shape for PRV (and equals Opacus exactly).
    unmerged = opacus_epsilon(events, delta=1e-6, accountant="prv")
    merged = opacus_epsilon(_merged(events), delta=1e-6, accountant="prv")
    assert merged != unmerged
    assert merged == pytest.approx(unmerged, rel=gap)
    assert epsilon_of(events, delta=1e-6, accountant="prv") == unmerged


def _count_engine_calls(monkeypatch):
    """Count Opacus's per-piece work: RDP curves, PRV discretisations and convolutions."""
    from opacus.accountants.analysis import prv, rdp
    from opacus.accountants.analysis.prv import compose

    calls = {"compute_rdp": 0, "discretize": 0, "fourier": 0, "convolve": 0}

    def counted(name, function):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(rdp, "compute_rdp", counted("compute_rdp", rdp.compute_rdp))
    monkeypatch.setattr(prv, "discretize", counted("discretize", prv.discretize))
    monkeypatch.setattr(compose, "_compose_fourier", counted("fourier", compose._compose_fourier))
    monkeypatch.setattr(compose, "_compose_two", counted("convolve", compose._compose_two))
    composition.rdp_curve.cache_clear()
    return calls


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_a_200_round_history_is_not_composed_event_by_event(monkeypatch, accountant):
    calls = _count_engine_calls(monkeypatch)
    events = _merchant_history(200, sigma=28.28125, q=0.8533333333333334)

    epsilon_of(events, delta=1e-7, accountant=accountant)  # a delta no other test used

    # Two distinct (sigma, q): two RDP curves per order set, never one per event.
    if accountant == "rdp":
        assert calls == {"compute_rdp": 2, "discretize": 0, "fourier": 0, "convolve": 0}
    else:
        # Curves at Opacus's default orders size the domain; one discretisation and one FFT
        # power per distinct event; the 201-leaf tree has 8 levels but only 15 distinct pairs
        # (Opacus convolves 200 times).
        assert calls == {"compute_rdp": 2, "discretize": 2, "fourier": 2, "convolve": 15}


def test_the_same_history_is_composed_once(monkeypatch):
    calls = _count_engine_calls(monkeypatch)
    events = _merchant_history(30)

    first = epsilon_of(events, delta=2e-7, accountant="prv")
    again = epsilon_of(list(events), delta=2e-7, accountant="prv")

    assert again == first
    assert calls["discretize"] == 2  # the second call computed nothing


def test_unknown_accountant_is_refused_even_without_events():
    with pytest.raises(Exception, match="Unknown accountant 'gdp'"):
        epsilon_of([], delta=1e-6, accountant="gdp")
