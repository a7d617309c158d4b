"""The coordinator's checkpoint: an atomic round trip, and no resume under other settings."""

from __future__ import annotations

import numpy as np
import pytest

from common.errors import ConfigError
from common.models.prior import ItemPrior
from server.rounds.checkpoint import (
    Checkpoint,
    check_resumable,
    load_checkpoint,
    restore_strategy_state,
    save_checkpoint,
    strategy_state,
)


class _Adam:  # the attributes Flower's FedOpt family keeps
    def __init__(self) -> None:
        self.m_t: dict[str, np.ndarray] | None = None
        self.v_t: dict[str, np.ndarray] | None = None


def test_a_checkpoint_round_trips_model_strategy_prior_and_history(tmp_path):
    adam = _Adam()
    adam.m_t = {"item.weight": np.full((2, 3), 0.5)}
    adam.v_t = {"item.weight": np.full((2, 3), 0.25)}
    saved = Checkpoint(
        run_name="spring",
        completed_round=3,
        config={"num-server-rounds": 5, "secagg": True},
        arrays={"item.weight": np.arange(6, dtype=np.float32).reshape(2, 3)},
        strategy=strategy_state(adam),
        prior=ItemPrior(counts=np.array([3.0, 1.5]), trained=np.array([0], dtype=np.int64)),
        rounds=[{"round": 1, "seconds": 1.0}],
        privacy={"shop-a": {"dp-epsilon": 1.2}},
        exhausted=["shop-b"],
    )
    save_checkpoint(tmp_path / "checkpoint.npz", saved)
    loaded = load_checkpoint(tmp_path / "checkpoint.npz")
    assert loaded is not None and loaded.completed_round == 3 and loaded.run_name == "spring"
    np.testing.assert_array_equal(loaded.arrays["item.weight"], saved.arrays["item.weight"])
    assert loaded.prior is not None and loaded.prior.trained.tolist() == [0]
    assert (loaded.exhausted, loaded.rounds, loaded.privacy) == (
        ["shop-b"],
        saved.rounds,
        saved.privacy,
    )
    fresh = _Adam()
    restore_strategy_state(fresh, loaded.strategy)
    np.testing.assert_array_equal(fresh.v_t["item.weight"], adam.v_t["item.weight"])
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.npz"]  # no temporary left
    assert load_checkpoint(tmp_path / "absent.npz") is None


class _AvgM:  # the attribute Flower's FedAvgM keeps its velocity in: a list of arrays
    def __init__(self) -> None:
        self.momentum_vector: list[np.ndarray] | None = None


def test_fedavgm_velocity_round_trips_in_parameter_order(tmp_path):
    avgm = _AvgM()
    avgm.momentum_vector = [np.full(3, float(i)) for i in range(12)]  # order past "9" and "10"
    saved = Checkpoint(
        run_name="r",
        completed_round=1,
        config={},
        arrays={"w": np.zeros(3)},
        strategy=strategy_state(avgm),
    )
    save_checkpoint(tmp_path / "checkpoint.npz", saved)
    fresh = _AvgM()
    restore_strategy_state(fresh, load_checkpoint(tmp_path / "checkpoint.npz").strategy)
    assert [float(v[0]) for v in fresh.momentum_vector] == [float(i) for i in range(12)]


def test_resuming_under_other_settings_is_refused_and_a_damaged_file_is_named(tmp_path):
    saved = Checkpoint(
        run_name="r",
        completed_round=1,
        config={"seed": 0, "resume": False, "run-signature": "signed-at-submission"},
        arrays={},
    )
    # resume itself may differ, and so does the signature (a resume is signed anew)
    check_resumable(
        saved, {"seed": 0, "resume": True, "run-signature": "signed-at-resume"}, path=tmp_path
    )
    # a setting newer than the checkpoint counts as its default there
    check_resumable(saved, {"seed": 0, "max-update-norm": 0.0, "resume": True}, path=tmp_path)
    with pytest.raises(ConfigError, match=r"max-update-norm: 0.0 -> 5.0"):
        check_resumable(saved, {"seed": 0, "max-update-norm": 5.0}, path=tmp_path)
    with pytest.raises(ConfigError, match="seed: 0 -> 1"):
        check_resumable(saved, {"seed": 1, "resume": True}, path=tmp_path)
    (tmp_path / "checkpoint.npz").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="unreadable"):
        load_checkpoint(tmp_path / "checkpoint.npz")
