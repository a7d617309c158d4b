"""The serving-source choice: the held-out split, the blend, the rule and its record."""

import json
import math

import numpy as np
import pytest
import torch

from common.data.catalog import ItemCatalog
from common.data.dataset import build_user_item_data
from common.data.schema import Interactions
from common.errors import ConfigError
from common.models.prior import ItemPrior
from common.source_choice import (
    BLEND,
    MODEL,
    POPULARITY,
    SourceChoice,
    blend,
    candidate_ndcg,
    choose,
    hold_out_selection,
    popularity_scores,
    shared_fingerprint,
)


def _data(with_events: bool = False):
    # u0: a b c d (test d); u1: a b c (test c); u2: b c (test c, one training item);
    # u3: e (no test item, one training item)
    rows = [
        ("u0", "a", 1, "view"),
        ("u0", "b", 2, "cart"),
        ("u0", "c", 3, "purchase"),
        ("u0", "d", 4, "view"),
        ("u1", "a", 1, "view"),
        ("u1", "b", 2, "view"),
        ("u1", "c", 3, "view"),
        ("u2", "b", 1, "cart"),
        ("u2", "c", 2, "view"),
        ("u3", "e", 1, "view"),
    ]
    events = Interactions(
        user_id=np.asarray([r[0] for r in rows], dtype=object),
        item_id=np.asarray([r[1] for r in rows], dtype=object),
        timestamp=np.asarray([r[2] for r in rows], dtype=np.int64),
        event_type=np.asarray([r[3] for r in rows], dtype=object) if with_events else None,
    )
    catalog = ItemCatalog.from_keys(events.item_id)
    return build_user_item_data(events, catalog), catalog


def test_hold_out_moves_each_users_last_training_item_and_keeps_the_rest():
    data, catalog = _data(with_events=True)
    split = hold_out_selection(data)
    a, b, c = (catalog.keys.index(k) for k in "abc")
    users = list(data.user_keys)
    # u0 trains on a b c -> holds out c, keeps a b; u1 trains a b -> holds out b, keeps a;
    # u2 and u3 have one training item each and keep it.
    held = dict(
        zip(
            (users[u] for u in split.held_out.test_users),
            split.held_out.test_items.tolist(),
            strict=True,
        )
    )
    assert held == {"u0": c, "u1": b}
    assert split.num_held_out == 2
    assert split.train.items_of(users.index("u0")).tolist() == [a, b]
    assert split.train.items_of(users.index("u1")).tolist() == [a]
    assert (
        split.train.items_of(users.index("u2")).tolist()
        == data.items_of(users.index("u2")).tolist()
    )
    assert split.train.num_train == data.num_train - 2
    # every user keeps training data (the private population is unchanged); test untouched
    assert (np.diff(split.train.train_indptr) >= 1).all()
    assert split.train.test_users.tolist() == data.test_users.tolist()
    assert split.train.test_items.tolist() == data.test_items.tolist()
    # event types travel with their items
    assert split.train.train_events is not None and split.held_out.test_events is not None
    assert len(split.train.train_events) == split.train.num_train
    # the held-out items are no training item of their user
    for u, item in zip(split.held_out.test_users, split.held_out.test_items, strict=True):
        assert item not in split.train.items_of(int(u)).tolist()


def test_popularity_scores_keep_the_order_of_noisy_counts():
    counts = np.asarray([5.0, -3.0, 0.0, 120.0, -0.5])
    z = popularity_scores(counts)
    assert np.argsort(z).tolist() == np.argsort(counts).tolist()
    assert z.mean() == pytest.approx(0.0, abs=1e-12)
    assert z.std() == pytest.approx(1.0)


def test_blend_ends_are_the_model_and_popularity():
    scores = np.asarray([[3.0, 1.0, 2.0, 0.0]])
    pop = popularity_scores(np.asarray([1.0, 10.0, 100.0, 1000.0]))
    assert np.array_equal(blend(scores, pop, 0.0), scores)
    assert np.argsort(-blend(scores, pop, 1.0)[0]).tolist() == [3, 2, 1, 0]
    middle = blend(scores, pop, 0.5)[0]
    standard = (scores[0] - scores[0].mean()) / scores[0].std()
    assert np.allclose(middle, 0.5 * standard + 0.5 * pop)
    single = blend(scores[0], pop, 0.25)  # one user's scores, as serving passes them
    assert single.shape == (4,)


def test_choose_serves_a_candidate_only_when_it_beats_popularity_by_one_se():
    rng = np.random.default_rng(0)
    pop = rng.random(400) * 0.1
    clearly = {1.0: pop, 0.5: pop + 0.05 + rng.normal(0, 0.01, 400), 0.0: pop}
    choice = choose(clearly, k=10)
    assert (choice.source, choice.weight, choice.best_weight) == (BLEND, 0.5, 0.5)
    assert choice.gain > choice.gain_se > 0
    assert choice.held_out == 400 and choice.k == 10

    noise = np.tile([0.051, -0.049], 200)  # mean 0.001, SE 0.0025: best, but not by 1 SE
    barely = {1.0: pop, 0.0: pop + noise}
    choice = choose(barely, k=10)
    assert choice.best_weight == 0.0 and 0 < choice.gain <= choice.gain_se
    assert (choice.source, choice.weight) == (POPULARITY, 1.0)
    assert "within 1 standard error" in choice.reason()

    worse = {1.0: pop, 0.0: pop - 0.02}
    assert choose(worse, k=10).source == POPULARITY

    model = {1.0: pop, 0.25: pop + 0.02, 0.0: pop + 0.05}
    assert choose(model, k=10).source == MODEL


def test_choose_ties_go_to_popularity_and_no_items_means_popularity():
    same = np.full(50, 0.2)
    assert choose({0.0: same, 0.5: same, 1.0: same}, k=10).weight == 1.0
    empty = choose({0.0: np.zeros(0), 1.0: np.zeros(0)}, k=10)
    assert empty.source == POPULARITY and empty.held_out == 0
    assert "no user has two training items" in empty.reason()
    one = choose({0.0: np.asarray([1.0]), 1.0: np.asarray([0.0])}, k=10)
    assert one.source == POPULARITY and math.isinf(one.gain_se)  # one item proves nothing
    with pytest.raises(ValueError, match="popularity"):
        choose({0.0: same}, k=10)


def test_a_choice_round_trips_and_a_damaged_one_is_refused(tmp_path):
    choice = choose({0.0: np.linspace(0.5, 1, 30), 1.0: np.linspace(0, 0.1, 30)}, k=5)
    again = SourceChoice.from_json(json.loads(choice.dumps()), where="x")
    assert again == choice
    assert json.loads(choice.dumps())["source"] == MODEL
    with pytest.raises(ConfigError, match="serving_source.json: expected a serving-source"):
        SourceChoice.from_json({"weight": 1.0}, where="serving_source.json")


def test_fingerprint_names_the_exact_parameters():
    a = {"w": np.ones((2, 3), dtype=np.float32), "b": np.zeros(3, dtype=np.float32)}
    same = {"b": np.zeros(3, dtype=np.float64), "w": np.ones((2, 3))}  # order and dtype
    assert shared_fingerprint(a) == shared_fingerprint(same)
    moved = {"w": np.ones((2, 3), dtype=np.float32), "b": np.asarray([0, 0, 1e-6], np.float32)}
    assert shared_fingerprint(a) != shared_fingerprint(moved)


class _Fixed(torch.nn.Module):
    """Scores every user with one fixed row (a stand-in recommender)."""

    def __init__(self, row):
        super().__init__()
        self.row = torch.as_tensor(row, dtype=torch.float32)

    def score_all(self, users):
        return self.row.expand(len(users), -1)


def test_candidates_are_scored_on_the_held_out_items_with_training_items_excluded():
    data, catalog = _data()
    split = hold_out_selection(data)
    a, b, c, d, e = (catalog.keys.index(k) for k in "abcde")
    # The model ranks c first then b; popularity ranks e first.
    row = np.zeros(data.num_items)
    row[[c, b, a, d, e]] = [5, 4, 3, 2, 1]
    counts = np.zeros(data.num_items)
    counts[[e, d, a, b, c]] = [50, 40, 30, 20, 10]
    prior = ItemPrior(counts=counts, trained=np.arange(data.num_items))
    per_user = candidate_ndcg(_Fixed(row), split.held_out, prior, k=1)
    users = list(data.user_keys)
    order = [users[u] for u in split.held_out.test_users]
    # u0 holds out c (the model's first): hit at 1; u1 holds out b, its training item a is
    # excluded, so the model ranks c first: a miss at k=1.
    assert dict(zip(order, per_user[0.0].tolist(), strict=True)) == {"u0": 1.0, "u1": 0.0}
    # popularity puts e first for both: a miss
    assert per_user[1.0].tolist() == [0.0, 0.0]
    assert set(per_user) == {0.0, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0}
