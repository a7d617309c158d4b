import pytest

from common.config import (
    RoundPlan,
    RunConfig,
    parse_run_config,
    round_plan_from_record,
    round_plan_to_record,
    to_run_config,
)
from common.errors import ConfigError


def test_parse_kebab_keys_into_typed_fields():
    config = parse_run_config(
        {"model": "neumf", "mlp-layers": "32 16", "num-server-rounds": 3, "learning-rate": "0.05"}
    )
    assert config.model.kind == "neumf" and config.model.mlp_layers == (32, 16)
    assert config.federation.num_rounds == 3 and config.train.learning_rate == 0.05


def test_round_trip():
    config = parse_run_config({"strategy": "fedprox", "proximal-mu": 0.1, "seed": 4})
    assert parse_run_config(to_run_config(config)) == config
    plan = RoundPlan(train=config.train, privacy=config.privacy, num_rounds=7)
    assert round_plan_from_record(round_plan_to_record(plan)) == plan


def test_privacy_settings_parse_and_validate():
    config = parse_run_config({"privacy-unit": "user", "target-epsilon": 3, "target-delta": 1e-7})
    assert config.privacy.enabled and config.privacy.budget == 3.0
    with pytest.raises(ConfigError, match="target-epsilon must be > 0 when privacy-unit"):
        parse_run_config({"privacy-unit": "user"})
    with pytest.raises(ConfigError, match="FedProx.*not supported with differential privacy"):
        parse_run_config({"privacy-unit": "user", "target-epsilon": 1, "proximal-mu": 0.1})
    dp = {"privacy-unit": "user", "target-epsilon": 1}
    assert parse_run_config({**dp, "train-min-items": 20}).privacy.train_min_items == 20
    with pytest.raises(ConfigError, match="train-min-items must be >= 0, got -1"):
        parse_run_config({**dp, "train-min-items": -1})
    with pytest.raises(ConfigError, match="train-min-items=20 decides from the item counts"):
        parse_run_config({**dp, "train-min-items": 20, "count-epsilon-share": 0})


def test_unknown_key_lists_known_ones():
    with pytest.raises(ConfigError, match="Unknown setting.*num-rounds.*known settings"):
        parse_run_config({"num-rounds": 3})


def test_wrong_type_names_key_and_value():
    with pytest.raises(ConfigError, match="'local-epochs' must be a int, got 'two'"):
        parse_run_config({"local-epochs": "two"})


def test_out_of_range_values_are_collected():
    with pytest.raises(ConfigError) as error:
        parse_run_config({"local-epochs": 0, "batch-users": 0})
    assert "local-epochs must be >= 1" in str(error.value)
    assert "batch-users must be >= 1" in str(error.value)


def test_defaults_are_valid():
    assert RunConfig().federation.num_rounds == 20


def test_fedavgm_and_kept_optimizer_state_parse_validate_and_travel_to_merchants():
    config = parse_run_config(
        {
            "strategy": "fedavgm",
            "fedavgm-learning-rate": "2",
            "fedavgm-momentum": 0.5,
            "keep-optimizer-state": "true",
        }
    )
    assert config.federation.fedavgm_learning_rate == 2.0
    assert config.federation.fedavgm_momentum == 0.5
    plan = RoundPlan(train=config.train, privacy=config.privacy, num_rounds=1)
    assert round_plan_from_record(round_plan_to_record(plan)).train.keep_optimizer_state
    with pytest.raises(ConfigError, match=r"fedavgm-momentum must be in \[0, 1\), got 1.0"):
        parse_run_config({"fedavgm-momentum": 1})
    with pytest.raises(ConfigError, match="fedavgm-learning-rate must be > 0"):
        parse_run_config({"fedavgm-learning-rate": 0})
    with pytest.raises(ConfigError, match="keep-optimizer-state=true applies to non-private"):
        parse_run_config(
            {"keep-optimizer-state": True, "privacy-unit": "user", "target-epsilon": 3}
        )
    with pytest.raises(ConfigError, match="got strategy=fedavgm"):
        parse_run_config({"strategy": "fedavgm", "secagg": True})


def test_a_cosine_schedule_lowers_the_learning_rate_round_by_round():
    from common.config import TrainConfig

    cosine = TrainConfig(learning_rate=0.01, learning_rate_schedule="cosine")
    rates = [cosine.at_round(r, 4).learning_rate for r in (1, 2, 3, 4)]
    assert rates == pytest.approx(
        [0.01, 0.01 * (1 + 0.5**0.5) / 2, 0.005, 0.01 * (1 - 0.5**0.5) / 2]
    )
    assert TrainConfig(learning_rate=0.01).at_round(3, 4).learning_rate == 0.01
    with pytest.raises(ConfigError, match="learning-rate-schedule must be one of constant, cosine"):
        parse_run_config({"learning-rate-schedule": "linear"})
