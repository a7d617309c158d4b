"""The gRPC service on 127.0.0.1: real calls, status codes, health, hot reload under traffic."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client.serving.api import HEALTH_SERVICE, stubs
from client.serving.index import ServingIndex, ServingOptions
from client.serving.model_dir import load_global_model, publish
from client.serving.service import ModelHolder, RunningServer, start_server
from tests.client.serving.conftest import Served, make_served

MESSAGES, SERVICES = stubs()


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[Served, RunningServer, Any]]:
    served = make_served(tmp_path, untrained=5)
    holder = ModelHolder(served.models, served.state, ServingOptions(max_k=40))
    server = start_server(holder, port=0, reload_interval=0.1, workers=8)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield served, server, channel
    finally:
        channel.close()
        server.stop(grace=1.0)


def call_code(fn: Any, request: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        fn(request, timeout=10)
    return caught.value.code(), caught.value.details()


def test_answers_over_grpc_match_the_in_process_index(running: Any) -> None:
    served, server, channel = running
    stub = SERVICES.RecommenderStub(channel)
    index = ServingIndex.build(
        load_global_model(served.models), served.state, ServingOptions(max_k=40)
    )
    for user in served.raw_users[:5]:
        reply = stub.Recommend(MESSAGES.RecommendRequest(user_id=user, k=10, exclude_seen=True))
        local = index.recommend(user, 10)
        assert [i.item_id for i in reply.items] == [key for key, _ in local.items]
        assert [i.score for i in reply.items] == pytest.approx(
            [s for _, s in local.items], abs=1e-5
        )
        assert reply.strategy == MESSAGES.Strategy.Value("PERSONAL")
        assert reply.model_version == index.version
        assert reply.source == local.source == "model"  # no serving-source choice was made
    recent = [served.catalog.keys[3], "never-heard-of-it", served.catalog.keys[8]]
    reply = stub.Recommend(
        MESSAGES.RecommendRequest(user_id="new", k=5, recent_item_ids=recent, exclude_seen=True)
    )
    local = index.recommend("new", 5, recent=tuple(recent))
    assert reply.strategy == MESSAGES.Strategy.Value("FOLD_IN")
    assert list(reply.unknown_item_ids) == ["never-heard-of-it"]
    assert [i.item_id for i in reply.items] == [key for key, _ in local.items]
    reply = stub.Recommend(MESSAGES.RecommendRequest(user_id="new", k=4))
    assert reply.strategy == MESSAGES.Strategy.Value("POPULARITY")
    assert reply.source == "popularity"
    similar = stub.Similar(MESSAGES.SimilarRequest(item_id=served.catalog.keys[2], k=6))
    assert [i.item_id for i in similar.items] == [
        k for k, _ in index.similar(served.catalog.keys[2], 6)
    ]
    info = stub.Info(MESSAGES.InfoRequest())
    assert (info.num_items, info.num_trained_items, info.num_users, info.max_k) == (
        len(served.catalog),
        len(served.catalog) - 5,
        served.data.num_users,
        40,
    )
    assert info.personalisation_lambda == float("inf")
    assert info.events_outside_catalog == served.data.unknown_items
    assert info.serving_source == "serves the model"
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", HEALTH_SERVICE):
        status = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING


def test_bad_requests_get_the_right_status_codes(running: Any) -> None:
    served, _, channel = running
    stub = SERVICES.RecommenderStub(channel)
    cases = [
        (
            stub.Recommend,
            MESSAGES.RecommendRequest(user_id="", k=5),
            grpc.StatusCode.INVALID_ARGUMENT,
            "user_id is empty",
        ),
        (
            stub.Recommend,
            MESSAGES.RecommendRequest(user_id="u", k=0),
            grpc.StatusCode.INVALID_ARGUMENT,
            "between 1 and 40, got 0",
        ),
        (
            stub.Recommend,
            MESSAGES.RecommendRequest(user_id="u", k=41),
            grpc.StatusCode.INVALID_ARGUMENT,
            "between 1 and 40, got 41",
        ),
        (
            stub.Similar,
            MESSAGES.SimilarRequest(item_id="nope", k=3),
            grpc.StatusCode.NOT_FOUND,
            "not in the federation catalog",
        ),
        (
            stub.Similar,
            MESSAGES.SimilarRequest(item_id=served.catalog.keys[-1], k=3),
            grpc.StatusCode.FAILED_PRECONDITION,
            "not trained",
        ),
        (
            stub.Similar,
            MESSAGES.SimilarRequest(item_id=served.catalog.keys[0], k=1000),
            grpc.StatusCode.INVALID_ARGUMENT,
            "between 1 and 40",
        ),
    ]
    for fn, request, code, text in cases:
        got_code, details = call_code(fn, request)
        assert got_code == code, (request, details)
        assert text in details


def test_before_a_model_exists_it_is_unavailable_then_serves_once_published(tmp_path: Path) -> None:
    served = make_served(tmp_path / "a")
    empty = tmp_path / "incoming"
    holder = ModelHolder(empty, served.state, ServingOptions())
    server = start_server(holder, port=0, reload_interval=0.1)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        stub = SERVICES.RecommenderStub(channel)
        code, details = call_code(stub.Recommend, MESSAGES.RecommendRequest(user_id="u", k=3))
        assert code == grpc.StatusCode.UNAVAILABLE and "no model loaded yet" in details
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == (
            health_pb2.HealthCheckResponse.NOT_SERVING
        )
        publish(
            empty,
            settings=served.settings,
            shared={n: p.detach() for n, p in served.model.shared_parameters().items()},
            catalog=served.catalog,
            prior=None,
            label="first",
        )
        deadline = time.monotonic() + 10
        while holder.current() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        reply = stub.Recommend(
            MESSAGES.RecommendRequest(user_id=served.raw_users[0], k=3), timeout=5
        )
        assert len(reply.items) == 3
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == (
            health_pb2.HealthCheckResponse.SERVING
        )
    finally:
        channel.close()
        server.stop(grace=1.0)


def test_a_reload_during_traffic_drops_no_request(running: Any) -> None:
    served, server, channel = running
    stub = SERVICES.RecommenderStub(channel)
    old_version = server.holder.current().version
    stop = threading.Event()
    errors: list[str] = []
    versions: list[str] = []
    counts = [0] * 4

    def hammer(slot: int) -> None:
        users = served.raw_users
        while not stop.is_set():
            user = users[(counts[slot] * 7 + slot) % len(users)]
            try:
                reply = stub.Recommend(
                    MESSAGES.RecommendRequest(user_id=user, k=10, exclude_seen=True), timeout=10
                )
                versions.append(reply.model_version)
                if len(reply.items) != 10:
                    errors.append(f"{len(reply.items)} items")
            except grpc.RpcError as error:  # any failure is a dropped request
                errors.append(f"{error.code()}: {error.details()}")
            counts[slot] += 1

    threads = [threading.Thread(target=hammer, args=(slot,)) for slot in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        shared = {n: p.detach() * 1.5 for n, p in served.model.shared_parameters().items()}
        publish(
            served.models,
            settings=served.settings,
            shared=shared,
            catalog=served.catalog,
            prior=None,
            label="v2",
        )
        deadline = time.monotonic() + 15
        while server.holder.current().version == old_version and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # traffic continues on the new model
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=20)
    new_version = server.holder.current().version
    assert new_version != old_version and server.holder.reloads == 1
    assert errors == []
    assert sum(counts) > 100
    assert set(versions) == {old_version, new_version}
    first_new = versions.index(new_version)
    assert old_version not in versions[first_new + 50 :]  # once swapped, it stays swapped
    # The new model answers like an index built from it in process.
    index = ServingIndex.build(
        load_global_model(served.models), served.state, ServingOptions(max_k=40)
    )
    reply = stub.Recommend(
        MESSAGES.RecommendRequest(user_id=served.raw_users[1], k=5, exclude_seen=True)
    )
    assert [i.item_id for i in reply.items] == [
        k for k, _ in index.recommend(served.raw_users[1], 5).items
    ]
    assert torch.is_tensor(next(iter(load_global_model(served.models).shared.values())))


def test_a_broken_model_keeps_the_previous_one_serving(running: Any) -> None:
    served, server, channel = running
    stub = SERVICES.RecommenderStub(channel)
    before = server.holder.current().version
    broken = {
        n: p.detach()[:-1] for n, p in served.model.shared_parameters().items()
    }  # wrong shapes
    publish(
        served.models,
        settings=served.settings,
        shared=broken,
        catalog=served.catalog,
        prior=None,
        label="broken",
    )
    deadline = time.monotonic() + 10
    while server.holder.last_error is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.holder.last_error is not None and "does not match" in server.holder.last_error
    reply = stub.Recommend(MESSAGES.RecommendRequest(user_id=served.raw_users[0], k=3), timeout=5)
    assert reply.model_version == before and len(reply.items) == 3
