"""Serving recent-items models (SASRec, the history model): a known user is read from their
stored history, an unseen one from their recent items as is; Similar uses item embeddings."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
import torch

from client.serving.api import stubs
from client.serving.index import PERSONAL, SEQUENCE, ServingIndex, ServingOptions
from client.serving.model_dir import load_global_model
from client.serving.service import ModelHolder, start_server
from common.config import parse_run_config
from common.models.base import build_model
from common.models.recent_items import RecentItemsRecommender
from tests.client.serving.conftest import Served, make_served

MESSAGES, SERVICES = stubs()


def _index(served: Served) -> ServingIndex:
    return ServingIndex.build(load_global_model(served.models), served.state, ServingOptions())


def _reading(served: Served, items: list[int], events: list[int] | None = None) -> np.ndarray:
    """Scores of a one-user copy of the model that reads ``items`` (oldest first), with
    their event types (default: not known)."""
    one = build_model(
        parse_run_config(served.settings).model,
        num_users=1,
        num_items=len(served.catalog),
        generator=torch.Generator(),
    )
    assert isinstance(one, RecentItemsRecommender)
    one.load_shared({n: p.detach() for n, p in served.model.shared_parameters().items()})
    one.eval().bind_histories(
        np.asarray([0, len(items)]),
        np.asarray(items, dtype=np.int64),
        events=None if events is None else np.asarray(events, dtype=np.int64),
    )
    with torch.no_grad():
        return one.score_all(torch.zeros(1, dtype=torch.int64)).numpy()[0].astype(np.float64)


def _top(served: Served, scores: np.ndarray, exclude: list[int], k: int) -> list[str]:
    scores = scores.copy()
    scores[exclude] = -np.inf
    return [served.catalog.keys[i] for i in np.argsort(-scores, kind="stable")[:k]]


def _history(served: Served, user: int) -> tuple[list[int], list[int]]:
    """The user's items in time order (training items, then the held-out, latest one) and
    their event types (the synthetic log has views, carts and purchases)."""
    data = served.data
    assert data.train_events is not None and data.test_events is not None
    held = data.test_users == user
    span = slice(data.train_indptr[user], data.train_indptr[user + 1])
    items = list(data.items_of(user)) + list(data.test_items[held])
    return items, list(data.train_events[span]) + list(data.test_events[held])


@pytest.mark.parametrize("kind", ["sasrec", "history", "ease"])
def test_a_known_user_is_read_from_their_whole_history_here(tmp_path: Path, kind: str) -> None:
    served = make_served(tmp_path, kind=kind)
    index = _index(served)
    for user in (0, 7):
        history, events = _history(served, user)
        assert len(set(events)) > 1  # more than one event type: they are read
        result = index.recommend(served.raw_users[user], 6)
        assert result.strategy == PERSONAL
        want = _top(served, _reading(served, history, events), history, 6)
        if kind != "history":  # the history model adds the user's fitted residual (zero here)
            assert [key for key, _ in result.items] == want
        # Recent items continue the stored history.
        session = [3, 11]
        continued = index.recommend(
            served.raw_users[user], 6, recent=tuple(served.catalog.keys[i] for i in session)
        )
        both = history + session
        want = _top(served, _reading(served, both, events + [-1, -1]), both, 6)
        assert [key for key, _ in continued.items] == want


@pytest.mark.parametrize("kind", ["sasrec", "history", "ease"])
def test_an_unseen_user_is_read_from_recent_items_with_nothing_fitted(
    tmp_path: Path, kind: str
) -> None:
    served = make_served(tmp_path, kind=kind)
    index = _index(served)
    keys = served.catalog.keys
    recent = (keys[2], keys[9], "not-in-catalog", keys[30])
    result = index.recommend("someone-new", 10, recent=recent)
    assert result.strategy == SEQUENCE
    assert result.unknown_items == ("not-in-catalog",)
    assert [key for key, _ in result.items] == _top(
        served, _reading(served, [2, 9, 30]), [2, 9, 30], 10
    )
    if kind == "sasrec":  # order matters to a sequence model: the last item leads
        reordered = index.recommend("someone-new", 10, recent=(keys[30], keys[9], keys[2]))
        assert [s for _, s in reordered.items] != [s for _, s in result.items]


def test_similar_uses_the_item_embeddings_without_the_padding_row(tmp_path: Path) -> None:
    served = make_served(tmp_path, kind="sasrec")
    index = _index(served)
    vectors = served.model.item_embedding.weight.detach().numpy()[: len(served.catalog)]
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cosine = unit @ unit[4]
    cosine[4] = -np.inf
    want = [served.catalog.keys[i] for i in np.argsort(-cosine, kind="stable")[:6]]
    assert [key for key, _ in index.similar(served.catalog.keys[4], 6)] == want


def test_sasrec_answers_over_grpc_with_the_recent_items_strategy(tmp_path: Path) -> None:
    served = make_served(tmp_path, kind="sasrec")
    holder = ModelHolder(served.models, served.state, ServingOptions())
    server = start_server(holder, port=0, reload_interval=0.1, workers=2)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        stub = SERVICES.RecommenderStub(channel)
        recent = [served.catalog.keys[3], served.catalog.keys[8]]
        reply = stub.Recommend(
            MESSAGES.RecommendRequest(user_id="new", k=5, recent_item_ids=recent), timeout=10
        )
        assert reply.strategy == MESSAGES.Strategy.Value("RECENT_ITEMS")
        local = _index(served).recommend("new", 5, recent=tuple(recent), exclude_seen=False)
        assert [i.item_id for i in reply.items] == [key for key, _ in local.items]
        known = stub.Recommend(
            MESSAGES.RecommendRequest(user_id=served.raw_users[0], k=5), timeout=10
        )
        assert known.strategy == MESSAGES.Strategy.Value("PERSONAL") and len(known.items) == 5
    finally:
        channel.close()
        server.stop(grace=1.0)


def test_similar_under_ease_reads_the_grams_leading_eigenvectors(tmp_path: Path) -> None:
    served = make_served(tmp_path, kind="ease")
    index = _index(served)
    (table,) = served.model.item_vectors()
    vectors = table.weight.detach().numpy()[: len(served.catalog)]
    items = served.model.item_ids()
    query = int(items[0])
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    cosine = unit @ unit[query]
    cosine[query] = -np.inf
    want = [served.catalog.keys[i] for i in np.argsort(-cosine, kind="stable")[:5]]
    got = [key for key, _ in index.similar(served.catalog.keys[query], 5)]
    assert got == want
    assert set(got) <= {served.catalog.keys[i] for i in items}  # trained items are the similar
