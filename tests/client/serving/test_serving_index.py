"""The serving snapshot against the in-process model: strategies, exclusions, errors."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from client.serving.foldin import fold_in
from client.serving.index import (
    FOLD_IN,
    PERSONAL,
    POPULARITY,
    InvalidRequest,
    ServingIndex,
    ServingOptions,
    UnknownItem,
    UntrainedItem,
)
from client.serving.model_dir import load_global_model, publish
from client.state.store import MerchantStore
from common.config import parse_run_config
from common.constants import MERCHANT_STATE_FILE
from common.data.catalog import ItemCatalog
from common.errors import RunDirError
from common.models.base import build_model
from common.source_choice import SourceChoice, blend, popularity_scores, shared_fingerprint
from tests.client.serving.conftest import Served, make_served


def build(served: Served, **options: object) -> ServingIndex:
    return ServingIndex.build(
        load_global_model(served.models),
        served.state,
        ServingOptions(**options),  # type: ignore[arg-type]
    )


def expected_top(served: Served, user: int, k: int, *, exclude_seen: bool = True) -> list[str]:
    with torch.no_grad():
        scores = served.model.score_all(torch.tensor([user])).numpy()[0].astype(np.float64)
    if exclude_seen:
        seen = list(served.data.items_of(user))
        held = served.data.test_items[served.data.test_users == user]
        scores[seen + list(held)] = -np.inf
    order = np.argsort(-scores, kind="stable")[:k]
    return [served.catalog.keys[i] for i in order]


@pytest.mark.parametrize("kind", ["mf", "neumf"])
def test_a_known_user_gets_the_models_top_k_without_seen_items(tmp_path: Path, kind: str) -> None:
    served = make_served(tmp_path, kind=kind)
    index = build(served)
    for user in (0, 5, served.data.num_users - 1):
        result = index.recommend(served.raw_users[user], 7)
        assert result.strategy == PERSONAL
        assert [key for key, _ in result.items] == expected_top(served, user, 7)
        with torch.no_grad():
            want = served.model.score_all(torch.tensor([user])).numpy()[0]
        for key, score in result.items:
            assert score == pytest.approx(float(want[served.catalog.keys.index(key)]), abs=1e-5)
        assert [
            key for key, _ in index.recommend(served.raw_users[user], 7, exclude_seen=False).items
        ] == expected_top(served, user, 7, exclude_seen=False)


def test_pseudonymised_state_is_queried_with_the_raw_user_id(tmp_path: Path) -> None:
    served = make_served(tmp_path, pseudonymised=True)
    index = build(served)
    assert served.data.user_keys[3] != served.raw_users[3]
    result = index.recommend(served.raw_users[3], 5)
    assert result.strategy == PERSONAL
    assert [key for key, _ in result.items] == expected_top(served, 3, 5)
    # The pseudonym itself is not a user ID the merchant's application would send.
    assert index.recommend(served.data.user_keys[3], 5).strategy == POPULARITY


def test_an_unseen_user_is_folded_in_from_recent_items(served: Served) -> None:
    index = build(served)
    recent = (
        served.catalog.keys[2],
        served.catalog.keys[9],
        "not-in-catalog",
        served.catalog.keys[30],
    )
    first = index.recommend("someone-new", 10, recent=recent)
    assert first.strategy == FOLD_IN
    assert first.unknown_items == ("not-in-catalog",)
    returned = [key for key, _ in first.items]
    assert not set(returned) & set(recent)  # the recent items themselves are excluded
    assert index.recommend("someone-new", 10, recent=recent) == first  # deterministic
    # Same as folding in by hand with the model's items.
    one = build_model(
        parse_run_config(served.settings).model,
        num_users=1,
        num_items=len(served.catalog),
        generator=torch.Generator(),
    )
    one.load_shared({n: p.detach() for n, p in served.model.shared_parameters().items()})
    local = fold_in(one, np.asarray([2, 9, 30]), parse_run_config(served.settings).train)
    with torch.no_grad():
        scores = one.score_all(torch.zeros(1, dtype=torch.int64)).numpy()[0]
    scores[[2, 9, 30]] = -np.inf
    assert returned == [served.catalog.keys[i] for i in np.argsort(-scores, kind="stable")[:10]]
    # The folded-in user prefers their own items to the rest of the catalog.
    with torch.no_grad():
        all_scores = one.score_all(torch.zeros(1, dtype=torch.int64)).numpy()[0]
    assert all_scores[[2, 9, 30]].mean() > np.median(all_scores) + 1.0
    assert set(local) == set(one.local_parameters())


def test_an_unseen_user_without_usable_items_gets_popularity(served: Served) -> None:
    index = build(served)
    counts = np.bincount(
        np.concatenate([served.data.train_items, served.data.test_items]),
        minlength=len(served.catalog),
    )
    result = index.recommend("nobody", 5, recent=("unknown-1",))
    assert result.strategy == POPULARITY
    assert result.unknown_items == ("unknown-1",)
    want = [served.catalog.keys[i] for i in np.argsort(-counts, kind="stable")[:5]]
    assert [key for key, _ in result.items] == want
    assert index.popularity_source.startswith("this merchant's own item counts")


def test_items_the_federation_did_not_train_rank_last_and_have_no_neighbours(
    tmp_path: Path,
) -> None:
    served = make_served(tmp_path, untrained=20)
    index = build(served)
    untrained = set(served.catalog.keys[-20:])
    for user in range(10):
        assert not {key for key, _ in index.recommend(served.raw_users[user], 20).items} & untrained
    with pytest.raises(UntrainedItem, match="not trained by the federation"):
        index.similar(served.catalog.keys[-1], 5)
    assert not {key for key, _ in index.similar(served.catalog.keys[1], 30)} & untrained
    assert index.popularity_source == "federation DP item counts"
    # Popularity follows the federation's private counts (item 0 most popular).
    assert [key for key, _ in index.recommend("nobody", 3).items] == list(served.catalog.keys[:3])


def test_similar_is_cosine_over_item_vectors(served: Served) -> None:
    index = build(served)
    vectors = served.model.item_embedding.weight.detach().numpy()  # type: ignore[union-attr]
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cosine = unit @ unit[4]
    cosine[4] = -np.inf
    want = [served.catalog.keys[i] for i in np.argsort(-cosine, kind="stable")[:6]]
    got = index.similar(served.catalog.keys[4], 6)
    assert [key for key, _ in got] == want
    assert got[0][1] == pytest.approx(float(cosine.max()), abs=1e-5)


def test_bad_requests_say_what_is_wrong(served: Served) -> None:
    index = build(served, max_k=50)
    with pytest.raises(InvalidRequest, match="user_id is empty"):
        index.recommend("", 5)
    with pytest.raises(InvalidRequest, match="between 1 and 50, got 0"):
        index.recommend(served.raw_users[0], 0)
    with pytest.raises(InvalidRequest, match="between 1 and 50, got 51"):
        index.recommend(served.raw_users[0], 51)
    with pytest.raises(UnknownItem, match="'nope' is not in the federation catalog"):
        index.similar("nope", 5)
    with pytest.raises(InvalidRequest, match="item_id is empty"):
        index.similar("", 5)


def test_a_merchant_new_to_the_model_fits_its_users_to_it(served: Served) -> None:
    os.remove(served.state / MERCHANT_STATE_FILE)  # joined a running federation: no user state
    index = build(served)
    assert index.users_fitted_here
    user = 0
    result = index.recommend(served.raw_users[user], 5)
    assert result.strategy == PERSONAL
    assert not (served.state / MERCHANT_STATE_FILE).exists()  # serving writes nothing


def test_personalisation_is_local_only_and_inf_is_the_global_model(served: Served) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in served.state.iterdir()}
    model_bytes = (served.models / "v1" / "global_model.pt").read_bytes()
    global_index = build(served, personalisation=math.inf)
    tuned = build(served, personalisation=0.01, fine_tune_epochs=2)
    assert not global_index.personalised and tuned.personalised
    q_global = global_index.model.item_embedding.weight  # type: ignore[union-attr]
    q_tuned = tuned.model.item_embedding.weight  # type: ignore[union-attr]
    assert torch.equal(q_global, served.model.item_embedding.weight)  # type: ignore[union-attr]
    assert not torch.allclose(q_global, q_tuned)
    # Nothing was written: not the merchant's state, not the published model.
    assert {p.name: p.stat().st_mtime_ns for p in served.state.iterdir()} == before
    assert (served.models / "v1" / "global_model.pt").read_bytes() == model_bytes


def test_a_model_for_another_catalog_is_refused(served: Served, tmp_path: Path) -> None:
    other = ItemCatalog(keys=tuple(f"other-{i}" for i in range(len(served.catalog) + 1)))
    model = build_model(
        parse_run_config(served.settings).model,
        num_users=1,
        num_items=len(other),
        generator=torch.Generator(),
    )
    publish(
        tmp_path / "other",
        settings=served.settings,
        shared={n: p.detach() for n, p in model.shared_parameters().items()},
        catalog=other,
        prior=None,
        label="x",
    )
    with pytest.raises(RunDirError, match="different item catalog"):
        ServingIndex.build(load_global_model(tmp_path / "other"), served.state, ServingOptions())


def test_a_directory_without_a_model_names_the_missing_file(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError, match="global_model.pt is missing"):
        load_global_model(tmp_path / "empty")


def _choice(weight: float, model: str) -> SourceChoice:
    return SourceChoice(
        weight=weight,
        k=10,
        held_out=100,
        ndcg=((0.0, 0.01), (weight, 0.05), (1.0, 0.02))
        if 0 < weight < 1
        else ((0.0, 0.01), (1.0, 0.02)),
        best_weight=weight if weight < 1 else 0.0,
        gain=0.03 if weight < 1 else -0.01,
        gain_se=0.01,
        model=model,
    )


def test_the_merchants_choice_decides_what_known_users_are_served(tmp_path: Path) -> None:
    served = make_served(tmp_path, untrained=20)  # a private run: DP counts, item 0 most popular
    global_model = load_global_model(served.models)
    fingerprint = shared_fingerprint({n: t.numpy() for n, t in global_model.shared.items()})
    store = MerchantStore(served.state)
    user = 3
    seen = set(served.data.items_of(user).tolist())
    seen |= set(served.data.test_items[served.data.test_users == user].tolist())

    store.save_source_choice(_choice(1.0, fingerprint))  # DP popularity
    index = build(served)
    result = index.recommend(served.raw_users[user], 5)
    assert (result.strategy, result.source) == (PERSONAL, "popularity")
    popular = [i for i in range(len(served.catalog)) if i not in seen][:5]  # counts fall with i
    assert [key for key, _ in result.items] == [served.catalog.keys[i] for i in popular]
    assert index.source_note.startswith("serves DP popularity")

    store.save_source_choice(_choice(0.5, fingerprint))  # a blend
    index = build(served)
    result = index.recommend(served.raw_users[user], 5)
    assert result.source == "blend"
    with torch.no_grad():
        raw = served.model.score_all(torch.tensor([user])).numpy()[0]
    scores = index._finish(raw.astype(np.float32))
    want = blend(scores, popularity_scores(global_model.prior.counts), 0.5)  # type: ignore[union-attr]
    want[sorted(seen)] = -np.inf
    assert [key for key, _ in result.items] == [
        served.catalog.keys[i] for i in np.argsort(-want, kind="stable")[:5]
    ]
    assert index.recommend("nobody", 3).source == "popularity"  # unseen user: popularity anyway


def test_a_choice_made_for_another_model_is_not_followed(tmp_path: Path, caplog) -> None:
    served = make_served(tmp_path)
    MerchantStore(served.state).save_source_choice(_choice(1.0, "0123456789abcdef"))
    index = build(served)
    assert index.choice is None
    assert "for another model" in caplog.text
    result = index.recommend(served.raw_users[0], 5)
    assert result.source == "model"
    assert [key for key, _ in result.items] == expected_top(served, 0, 5)
