"""EASE^R, the strong centralised reference: closed form, validation split, λ choice."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from common.data.catalog import ItemCatalog
from common.data.dataset import UserItemData, build_user_item_data
from common.errors import ConfigError
from simulations.reference import (
    EASE_MAX_ITEMS,
    choose_ease_lambda,
    ease_weights,
    evaluate_ease,
    validation_split,
)
from tests.conftest import make_events


def _data(sequences: dict[str, str], *, hold_out: bool = True) -> UserItemData:
    """One event per letter, in time order; items are the letters."""
    rows = [(user, item, t) for user, items in sequences.items() for t, item in enumerate(items)]
    events = make_events(rows)
    return build_user_item_data(events, ItemCatalog.from_keys(events.item_id), hold_out=hold_out)


# Training X (users x items a, b, c):  u1 [1 1 0], u2 [1 1 1], u3 [0 1 1]
#   XᵀX = [[2 2 1], [2 3 2], [1 2 2]]
THREE_USERS = {"u1": "ab", "u2": "abc", "u3": "bc"}


@pytest.mark.parametrize(
    ("lam", "expected"),
    [
        # λ=1: G = [[3 2 1], [2 4 2], [1 2 3]], det 16, adj(G) = [[8 -4 0], [-4 8 -4], [0 -4 8]],
        # P = adj/16 with diag 1/2, so B_ij = -P_ij / P_jj = -adj_ij / adj_jj.
        (1.0, [[0.0, 0.5, 0.0], [0.5, 0.0, 0.5], [0.0, 0.5, 0.0]]),
        # λ=2: G = [[4 2 1], [2 5 2], [1 2 4]], det 51, adj(G) = [[16 -6 -1], [-6 15 -6],
        # [-1 -6 16]]: B_ab = 6/15, B_ac = 1/16, B_ba = 6/16, B_bc = 6/16, B_ca = 1/16, B_cb = 6/15.
        (2.0, [[0.0, 0.4, 0.0625], [0.375, 0.0, 0.375], [0.0625, 0.4, 0.0]]),
    ],
)
def test_ease_weights_match_the_hand_computed_closed_form(
    lam: float, expected: list[list[float]]
) -> None:
    data = _data(THREE_USERS, hold_out=False)

    weights = ease_weights(data, lam)

    assert weights.shape == (3, 3)
    np.testing.assert_allclose(weights, expected, rtol=0, atol=1e-9)


def test_ease_weights_are_binary_whatever_the_event_values() -> None:
    repeated = _data({"u1": "abab", "u2": "abc", "u3": "bc"}, hold_out=False)  # a, b twice

    np.testing.assert_allclose(
        ease_weights(repeated, 1.0), ease_weights(_data(THREE_USERS, hold_out=False), 1.0)
    )


def test_validation_split_holds_out_the_last_training_item_never_the_test_item() -> None:
    # u1: a b c -> test c, train a b;  u2: a b -> test b, train a;  u3: d only.
    data = _data({"u1": "abc", "u2": "ab", "u3": "d"})

    split = validation_split(data)

    assert split.test_users.tolist() == [0]  # u1 alone has 2 training items
    assert split.test_items.tolist() == [1]  # b, u1's latest training item (not c, its test)
    assert [split.items_of(u).tolist() for u in range(3)] == [[0], [0], [3]]  # a | a | d
    assert split.num_items == data.num_items and split.user_keys == data.user_keys
    assert 2 not in split.train_items  # c, a real test item, is nowhere


def test_validation_split_keeps_the_timestamp_order() -> None:
    # u1 saw c first and a last: the validation item is a, whatever the catalog order.
    split = validation_split(_data({"u1": "cbae"}))

    assert split.test_items.tolist() == [0]
    assert sorted(split.items_of(0).tolist()) == [1, 2]


def _oracle_validation_ndcg(data: UserItemData, lam: float, *, k: int) -> float:
    """Slow and plain: hold out each user's last training item, solve, rank, average NDCG."""
    train = {u: list(data.items_of(u)) for u in range(data.num_users)}
    held = {u: items.pop() for u, items in train.items() if len(items) >= 2}
    x = np.zeros((data.num_users, data.num_items))
    for u, items in train.items():
        x[u, items] = 1.0
    p = np.linalg.solve(x.T @ x + lam * np.eye(data.num_items), np.eye(data.num_items))
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    gains = []
    for u, target in held.items():
        scores = x[u] @ b
        candidates = [i for i in range(data.num_items) if i not in train[u]]
        rank = sum(scores[i] > scores[target] for i in candidates)
        gains.append(1 / math.log2(rank + 2) if rank < k else 0.0)
    return float(np.mean(gains))


def test_lambda_choice_is_the_best_validation_ndcg() -> None:
    # Five items, six users; every validation user's scores are at least 2% apart (no ties).
    data = _data(
        {
            "u0": "daec",
            "u1": "edab",
            "u2": "bedca",
            "u3": "badce",
            "u4": "aecbd",
            "u5": "aecdb",
        }
    )

    lam, table = choose_ease_lambda(data, k=10, seed=0, grid=(1.0, 1000.0))

    assert table == pytest.approx(
        {1.0: _oracle_validation_ndcg(data, 1.0, k=10), 1000.0: 0.8154648767857289}
    )
    assert table[1000.0] == pytest.approx(_oracle_validation_ndcg(data, 1000.0, k=10))
    assert table[1000.0] > table[1.0] + 0.1
    assert lam == 1000.0


def test_lambda_choice_ties_go_to_the_first_of_the_grid() -> None:
    # u1 (test d) is the one validation user: trains a, holds out b. The validation
    # training rows are u1 {a}, u2 {a} (its b is its test item), u3 {c}: nothing co-occurs,
    # B = 0, and b ties with c and d at score 0 for every λ. Its rank is uniform on
    # {0, 1, 2}: NDCG = (1 + 1/log2(3) + 1/2) / 3.
    data = _data({"u1": "abd", "u2": "ab", "u3": "c"})

    lam, table = choose_ease_lambda(data, k=10, seed=0, grid=(10.0, 1.0))

    tied = (1 + 1 / math.log2(3) + 1 / 2) / 3
    assert table == pytest.approx({10.0: tied, 1.0: tied})
    assert lam == 10.0


def test_evaluate_ease_refits_on_all_training_data_and_reports_the_choice() -> None:
    data = _data({"u1": "abc", "u2": "abc", "u3": "ab", "u4": "bc", "u5": "ac"})

    result = evaluate_ease(data, k=10, seed=0)

    assert result.lam in result.validation
    assert result.validation[result.lam] == max(result.validation.values())
    assert result.evaluation.num_users == len(data.test_users)
    assert result.seconds >= 0
    fixed = evaluate_ease(data, k=10, seed=0, lam=result.lam)
    assert fixed.validation == {}
    assert fixed.evaluation.means == result.evaluation.means


def test_ease_refuses_a_catalog_above_the_limit() -> None:
    data = _data(THREE_USERS)
    huge = dataclasses.replace(data, num_items=EASE_MAX_ITEMS + 1)

    with pytest.raises(ConfigError, match=r"20001 items, above the limit of 20000"):
        evaluate_ease(huge, k=10, seed=0)


def test_the_pooled_fedrec_model_of_a_dp_run_trains_with_the_non_private_defaults() -> None:
    from common.config import RunConfig, parse_run_config
    from common.recipes import run_settings
    from simulations.baselines import non_private_run

    privacy = {"target-epsilon": 3.0, "privacy-unit": "user"}
    dp = parse_run_config(run_settings({"local-epochs": 3, "model": "mf"}, privacy))  # DP-SGD
    assert dp.model.embedding_dim == 16 and dp.train.learning_rate == 0.1

    plain = non_private_run(dp)

    default = RunConfig()
    assert not plain.privacy.enabled
    assert plain.model.embedding_dim == default.model.embedding_dim
    assert plain.train.learning_rate == default.train.learning_rate
    assert plain.train.batch_users == default.train.batch_users
    assert plain.federation.num_rounds == default.federation.num_rounds
    assert plain.train.local_epochs == 3  # explicit, so kept
    assert non_private_run(default) is default
