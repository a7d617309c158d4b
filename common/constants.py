"""Names for keys, defined once: record keys, metric names, file names."""

from __future__ import annotations

from typing import Final

# --- Flower record keys -------------------------------------------------------
ARRAYS_KEY: Final = "arrays"
CONFIG_KEY: Final = "config"
METRICS_KEY: Final = "metrics"
MERCHANT_KEY: Final = "merchant"
MERCHANT_NAME_FIELD: Final = "name"
WEIGHT_KEY: Final = "num-examples"  # FedAvg weight in every reply MetricRecord

# --- Metric names -------------------------------------------------------------
TRAIN_LOSS: Final = "train-loss"
TRAIN_USERS: Final = "train-users"
TRAIN_STEPS: Final = "train-steps"
TRAIN_SECONDS: Final = "train-seconds"
EVAL_USERS: Final = "eval-users"
EVAL_SECONDS: Final = "eval-seconds"
AUC: Final = "auc"


def hr_at(k: int) -> str:
    return f"hr@{k}"


def ndcg_at(k: int) -> str:
    return f"ndcg@{k}"


def recall_at(k: int) -> str:
    return f"recall@{k}"


def sampled_hr_at(k: int) -> str:
    return f"sampled-hr@{k}"


def sampled_ndcg_at(k: int) -> str:
    return f"sampled-ndcg@{k}"


# --- Run directory layout -----------------------------------------------------
RUN_CONFIG_FILE: Final = "config.json"
RUN_METRICS_FILE: Final = "metrics.json"
RUN_CATALOG_FILE: Final = "catalog.json"
GLOBAL_MODEL_FILE: Final = "global_model.pt"
MERCHANTS_DIR: Final = "merchants"
MERCHANT_DATA_FILE: Final = "data.npz"
MERCHANT_USERS_FILE: Final = "users.json"
MERCHANT_STATE_FILE: Final = "local_state.pt"
FEDERATION_FILE: Final = "federation.json"
