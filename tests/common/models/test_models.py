import pytest
import torch

from common.errors import ConfigError
from common.models import ModelConfig, build_model


def _model(kind, users=4, items=6, seed=0):
    return build_model(
        ModelConfig(kind=kind, embedding_dim=8, mlp_layers=(8, 4)),
        num_users=users,
        num_items=items,
        generator=torch.Generator().manual_seed(seed),
    )


@pytest.mark.parametrize("kind", ["mf", "neumf"])
def test_shared_and_local_partition_every_parameter(kind):
    model = _model(kind)
    shared, local = model.shared_parameters(), model.local_parameters()
    assert set(shared).isdisjoint(local)
    assert set(shared) | set(local) == {n for n, _ in model.named_parameters()}
    # Local parameters are exactly the tables indexed by user.
    assert all(p.shape[0] == model.num_users for p in local.values())
    assert all("user" in name for name in local) and not any("user" in n for n in shared)


@pytest.mark.parametrize("kind", ["mf", "neumf"])
def test_score_all_matches_pairwise_score(kind):
    model = _model(kind)
    users = torch.tensor([0, 3])
    full = model.score_all(users)  # (2, 6)
    pairs = model.score(users.repeat_interleave(6), torch.arange(6).repeat(2)).view(2, 6)
    torch.testing.assert_close(full, pairs)


def test_mf_score_is_dot_product_plus_biases():
    model = _model("mf")
    with torch.no_grad():
        model.user_bias.weight[1] = 0.5
        model.item_bias.weight[2] = -0.25
        model.global_bias.bias.fill_(0.125)
    expected = model.user_embedding.weight[1] @ model.item_embedding.weight[2] + 0.5 - 0.25 + 0.125
    torch.testing.assert_close(model.score(torch.tensor([1]), torch.tensor([2]))[0], expected)


def test_same_seed_same_init_and_shared_loads_across_user_counts():
    a, b = _model("mf", seed=5), _model("mf", seed=5)
    torch.testing.assert_close(a.item_embedding.weight, b.item_embedding.weight)
    server = _model("mf", users=0)
    client = _model("mf", users=9, seed=1)
    client.load_shared({n: p.detach() for n, p in server.shared_parameters().items()})
    torch.testing.assert_close(client.item_embedding.weight, server.item_embedding.weight)


def test_load_shared_refuses_wrong_catalog_size():
    small, big = _model("mf", items=6), _model("mf", items=7)
    with pytest.raises(ValueError, match="shape"):
        small.load_shared({n: p.detach() for n, p in big.shared_parameters().items()})


def test_unknown_model_kind_is_a_config_error():
    with pytest.raises(ConfigError, match="Unknown model 'svd'"):
        ModelConfig(kind="svd")
