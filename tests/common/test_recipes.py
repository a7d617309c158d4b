"""The real-log recipe: beneath explicit settings, on a real log or with the history model."""

from __future__ import annotations

import pytest

from common.config import RunConfig, parse_run_config
from common.errors import ConfigError
from common.recipes import REAL_LOG_DEFAULTS, run_settings

OFF = {"privacy-unit": "off"}


def test_a_real_log_without_a_model_gets_the_recipe_and_explicit_settings_win() -> None:
    run = parse_run_config(run_settings({"learning-rate": 0.01}, OFF, real_log=True))
    assert run.model.kind == "history" and run.federation.strategy == "fedavgm"
    assert run.train.keep_optimizer_state and run.train.learning_rate_schedule == "cosine"
    assert run.train.learning_rate == 0.01  # the user's, not the recipe's
    assert run.privacy.local_steps == REAL_LOG_DEFAULTS["local-steps"]
    assert run.federation.num_rounds == REAL_LOG_DEFAULTS["num-server-rounds"]


def test_the_recipe_stays_out_of_synthetic_data_other_models_and_private_runs() -> None:
    default = RunConfig()
    synthetic = parse_run_config(run_settings({}, OFF))
    assert synthetic.model.kind == default.model.kind == "mf"
    mf = parse_run_config(run_settings({"model": "mf"}, OFF, real_log=True))
    assert mf.federation.strategy == "fedavg" and not mf.train.keep_optimizer_state
    dp = {"target-epsilon": 3.0, "privacy-unit": "user"}
    private = parse_run_config(run_settings({"model": "mf"}, dp, real_log=True))
    assert private.model.kind == "mf" and private.model.embedding_dim == 16  # DP-SGD's layer
    assert not private.train.keep_optimizer_state


def test_user_level_dp_without_a_model_learns_dp_ease_from_one_release() -> None:
    from common.recipes import EASE_PRIVATE_DEFAULTS, PRIVATE_DEFAULT_MODEL

    dp = {"target-epsilon": 3.0, "privacy-unit": "user"}
    for real_log in (False, True):
        run = parse_run_config(run_settings({}, dp, real_log=real_log))
        assert run.model.kind == PRIVATE_DEFAULT_MODEL == "ease"
        assert run.federation.num_rounds == 1
        assert run.privacy.train_min_items == EASE_PRIVATE_DEFAULTS["train-min-items"]
        assert run.privacy.count_share == EASE_PRIVATE_DEFAULTS["count-epsilon-share"]
    same = parse_run_config(run_settings({"num-server-rounds": "1"}, dp))
    assert same.model.kind == "ease"
    # record-level DP, or no DP: EASE needs user-level counts, so MF stays the default
    record = {"target-epsilon": 3.0, "privacy-unit": "interaction"}
    assert parse_run_config(run_settings({}, record)).model.kind == "mf"
    assert parse_run_config(run_settings({}, OFF)).model.kind == "mf"


def test_asking_for_dp_sgd_rounds_without_a_model_says_how_to_choose_one() -> None:
    dp = {"target-epsilon": 3.0, "privacy-unit": "user"}
    with pytest.raises(ConfigError) as raised:
        run_settings({"num-server-rounds": 5}, dp)
    message = str(raised.value)
    assert "num-server-rounds=5" in message and "--model mf" in message
    chosen = parse_run_config(run_settings({"num-server-rounds": 5, "model": "mf"}, dp))
    assert chosen.model.kind == "mf" and chosen.federation.num_rounds == 5


def test_choosing_the_history_model_brings_its_recipe_on_any_data() -> None:
    history = parse_run_config(run_settings({"model": "history", "local-steps": 5}, OFF))
    assert history.federation.strategy == "fedavgm" and history.train.keep_optimizer_state
    assert history.model.embedding_dim == REAL_LOG_DEFAULTS["embedding-dim"]
    assert history.privacy.local_steps == 5  # explicit settings still win
    dp = {"target-epsilon": 3.0, "privacy-unit": "user"}
    private = parse_run_config(run_settings({"model": "history"}, dp))
    assert private.federation.strategy == "fedavg" and not private.train.keep_optimizer_state


def test_choosing_sasrec_brings_its_own_recipe_private_or_not() -> None:
    from common.recipes import SASREC_DEFAULTS, SASREC_PRIVATE_DEFAULTS

    plain = parse_run_config(run_settings({"model": "sasrec"}, OFF, real_log=True))
    assert plain.model.sasrec_negatives == SASREC_DEFAULTS["sasrec-negatives"]
    assert plain.train.keep_optimizer_state and plain.federation.strategy == "fedavg"
    assert plain.model.embedding_dim == SASREC_DEFAULTS["embedding-dim"]
    dp = {"target-epsilon": 3.0, "privacy-unit": "user"}
    private = parse_run_config(run_settings({"model": "sasrec", "dropout": 0.3}, dp))
    assert private.model.embedding_dim == SASREC_PRIVATE_DEFAULTS["embedding-dim"]
    assert private.privacy.max_grad_norm == SASREC_PRIVATE_DEFAULTS["max-grad-norm"]
    assert private.model.sasrec_negatives > 0  # a private SASRec needs the sampled softmax
    assert private.model.dropout == 0.3 and not private.train.keep_optimizer_state
