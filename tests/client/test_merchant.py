import numpy as np
import pytest
import torch

from client.merchant import Merchant
from client.state.store import MerchantStore
from common.config import TrainConfig
from common.constants import MERCHANT_DATA_FILE, MERCHANT_USERS_FILE
from common.errors import ConfigError
from common.models import ModelConfig, build_model


@pytest.fixture
def merchant(tmp_path, tiny_data):
    tiny_data.save(tmp_path / "m1", data_file=MERCHANT_DATA_FILE, users_file=MERCHANT_USERS_FILE)
    return Merchant(MerchantStore(tmp_path / "m1"), ModelConfig(embedding_dim=4), seed=0)


def _global(num_items=4):
    model = build_model(
        ModelConfig(embedding_dim=4),
        num_users=0,
        num_items=num_items,
        generator=torch.Generator().manual_seed(0),
    )
    return {n: p.detach().numpy().copy() for n, p in model.shared_parameters().items()}


def test_train_returns_only_shared_parameters_and_keeps_users_on_disk(merchant):
    outcome = merchant.train(_global(), TrainConfig(local_epochs=1), server_round=1)
    assert set(outcome.shared) == {"item_embedding.weight", "item_bias.weight", "global_bias.bias"}
    assert outcome.num_examples == 4  # 2 + 1 + 1 training pairs
    local = merchant.store.load_local()
    assert set(local) == {"user_embedding.weight", "user_bias.weight"}
    assert local["user_embedding.weight"].shape == (3, 4)


def test_user_state_persists_across_rounds(merchant):
    merchant.train(_global(), TrainConfig(local_epochs=1), server_round=1)
    after_one = merchant.store.load_local()["user_embedding.weight"].clone()
    merchant.train(_global(), TrainConfig(local_epochs=1), server_round=2)
    after_two = merchant.store.load_local()["user_embedding.weight"]
    assert not torch.equal(after_one, after_two)
    # A fresh Merchant object over the same directory resumes from disk.
    again = Merchant(merchant.store, merchant.model_config, seed=0)
    model = again._model(_global())
    torch.testing.assert_close(model.user_embedding.weight.detach(), after_two)


def test_global_model_for_another_catalog_is_refused(merchant):
    with pytest.raises(ConfigError, match="same model settings and item catalog"):
        merchant.train(_global(num_items=9), TrainConfig(), server_round=1)


def test_evaluate_reports_means_for_held_out_users(merchant):
    result = merchant.evaluate(_global(), k=2, server_round=1)
    assert result.num_users == 2
    assert 0.0 <= result.means["ndcg@2"] <= result.means["hr@2"] <= 1.0
    assert np.isfinite(result.means["auc"])


def test_kept_optimizer_state_resumes_adam_where_the_last_round_left_it(merchant):
    keep = TrainConfig(local_epochs=1, keep_optimizer_state=True)
    merchant.train(_global(), keep, server_round=1)
    first = merchant.store.load_optimizer(run="")
    assert first is not None and first["state"][0]["step"].item() >= 1
    steps_one = first["state"][0]["step"].item()
    merchant.train(_global(), keep, server_round=2)
    second = merchant.store.load_optimizer(run="")
    assert second["state"][0]["step"].item() == 2 * steps_one  # resumed, not restarted
    # Without the setting nothing is read or written: the stored state stays as it was.
    merchant.train(_global(), TrainConfig(local_epochs=1), server_round=3)
    assert merchant.store.load_optimizer(run="")["state"][0]["step"].item() == 2 * steps_one
    # Another run does not inherit it: its Adam starts afresh and then belongs to it.
    assert merchant.store.load_optimizer(run="next") is None
    merchant.train(_global(), keep, server_round=1, run="next")
    assert merchant.store.load_optimizer(run="next")["state"][0]["step"].item() == steps_one


def test_a_stored_optimizer_state_for_another_model_starts_adam_afresh(merchant):
    keep = TrainConfig(local_epochs=1, keep_optimizer_state=True)
    merchant.train(_global(), keep, server_round=1)
    steps_one = merchant.store.load_optimizer(run="")["state"][0]["step"].item()
    wrong = merchant.store.load_optimizer(run="")
    wrong["state"][0]["exp_avg"] = torch.zeros(7, 7)  # not this model's shape
    merchant.store.save_optimizer(wrong, run="")
    merchant.train(_global(), keep, server_round=2)
    assert merchant.store.load_optimizer(run="")["state"][0]["step"].item() == steps_one


def test_a_merchant_trains_each_round_at_the_scheduled_learning_rate(merchant):
    from common.config import RoundPlan
    from common.privacy.config import PrivacyConfig

    train = TrainConfig(
        local_epochs=1,
        learning_rate=0.04,
        learning_rate_schedule="cosine",
        keep_optimizer_state=True,
    )
    plan = RoundPlan(train=train, privacy=PrivacyConfig(), num_rounds=2)
    merchant.train(_global(), plan, server_round=1)
    assert merchant.store.load_optimizer(run="")["param_groups"][0]["lr"] == pytest.approx(0.04)
    merchant.train(_global(), plan, server_round=2)
    assert merchant.store.load_optimizer(run="")["param_groups"][0]["lr"] == pytest.approx(0.02)
