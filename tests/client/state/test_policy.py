"""A merchant's policy: what it agrees to train, read from its own policy.json."""

from __future__ import annotations

import json

import pytest

from client.state.policy import MerchantPolicy, ensure_policy, load_policy
from client.state.store import MerchantStore
from common.config import parse_run_config
from common.errors import ConfigError


def _run(**settings: object):
    return parse_run_config(settings)


def test_the_default_policy_accepts_only_user_level_dp():
    policy = MerchantPolicy()
    assert policy.require_privacy == "user"
    assert policy.violations(_run(**{"privacy-unit": "user", "target-epsilon": 3.0})) == []
    (problem,) = policy.violations(_run())
    assert "requires user-level DP" in problem and "privacy-unit=off" in problem
    assert policy.violations(_run(**{"privacy-unit": "client", "target-epsilon": 3.0}))


def test_epsilon_per_run_lifetime_budget_and_secagg_limits():
    policy = MerchantPolicy(max_epsilon_per_run=2.0, epsilon_max=5.0, require_secagg=True)
    run = _run(**{"privacy-unit": "user", "target-epsilon": 3.0})
    problems = policy.violations(run, spent=5.0)
    assert len(problems) == 3
    assert "plans epsilon 3, above" in problems[0] and "limit of 2 per run" in problems[0]
    assert "spent epsilon 5.000 of its lifetime budget 5" in problems[1]
    assert "requires SecAgg+" in problems[2]
    ok = _run(**{"privacy-unit": "user", "target-epsilon": 2.0, "secagg": True})
    assert policy.violations(ok, spent=1.0) == []


def test_none_accepts_a_non_private_run_and_dp_accepts_client_level():
    assert MerchantPolicy(require_privacy="none").violations(_run()) == []
    client = _run(**{"privacy-unit": "client", "target-epsilon": 3.0})
    assert MerchantPolicy(require_privacy="dp").violations(client) == []


def test_a_bad_policy_file_says_which_key_and_what_was_expected(tmp_path):
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"require-privacy": "maybe"}))
    with pytest.raises(ConfigError, match="require-privacy must be one of user, dp, none"):
        load_policy(path)
    path.write_text(json.dumps({"max-epsilon": 2}))
    with pytest.raises(ConfigError, match="unknown key.*max-epsilon.*max-epsilon-per-run"):
        load_policy(path)
    path.write_text(json.dumps({"max-epsilon-per-run": -1}))
    with pytest.raises(ConfigError, match="max-epsilon-per-run must be a number > 0"):
        load_policy(path)
    path.write_text("{")
    with pytest.raises(ConfigError, match="not readable JSON"):
        load_policy(path)


def test_defaults_are_written_once_and_the_budget_keeps_other_keys(tmp_path):
    path = tmp_path / "policy.json"
    assert ensure_policy(path) == MerchantPolicy()
    assert json.loads(path.read_text())["require-privacy"] == "user"
    path.write_text(json.dumps({"require-privacy": "none", "require-secagg": True}))
    MerchantStore(tmp_path).write_policy(epsilon_max=2.5)
    policy = load_policy(path)
    assert (policy.require_privacy, policy.require_secagg, policy.epsilon_max) == (
        "none",
        True,
        2.5,
    )
    assert MerchantStore(tmp_path).policy_epsilon_max() == 2.5
