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
SERVER_ROUND_FIELD: Final = "server-round"  # in every instruction's ConfigRecord
TOP_K_FIELD: Final = "top-k"  # in an evaluate instruction: the cut-off of the ranking metrics
COUNTS_ARRAY: Final = "counts"  # in ITEM_COUNTS_KEY and ITEM_PRIOR_KEY: per-item counts
TRAINED_ARRAY: Final = "trained"  # in ITEM_PRIOR_KEY: the items some merchant trained

# --- Node config keys (a SuperNode's ``--node-config``) -------------------------
NODE_STATE_DIR: Final = "state-dir"  # a deployed merchant's state (``fedrec merchant join``)
NODE_PARTITION_ID: Final = "partition-id"  # a simulated node: its merchant directory's index

# --- Metric names -------------------------------------------------------------
TRAIN_LOSS: Final = "train-loss"
TRAIN_USERS: Final = "train-users"
TRAIN_STEPS: Final = "train-steps"
TRAIN_SECONDS: Final = "train-seconds"
CLIENT_SECONDS: Final = "client-seconds"  # wall time inside the ClientApp handler
CLIENT_STARTUP: Final = "client-startup-seconds"  # process start to handler entry (imports)
EVAL_USERS: Final = "eval-users"
EVAL_SECONDS: Final = "eval-seconds"
AUC: Final = "auc"

# --- Privacy fields in replies (numbers in the MetricRecord, words in the merchant record) ----
DP_EPSILON: Final = "dp-epsilon"  # spent so far, at DP_DELTA
DP_DELTA: Final = "dp-delta"
DP_EPSILON_MAX: Final = "dp-epsilon-max"  # the merchant's budget
DP_NOISE: Final = "dp-noise-multiplier"  # sigma of DP-SGD steps
DP_COUNT_NOISE: Final = "dp-count-noise-multiplier"  # sigma of the item-count release
DP_TOP_UP_NOISE: Final = "dp-count-top-up-noise-multiplier"  # sigma of the count top-up
COUNTS_TOP_UP_FIELD: Final = "counts-top-up"  # a query for the count top-up, not the counts
UNTRAINED_FIELD: Final = "untrained"  # evaluate: the federation trained no model (counts only)
DP_CLIP: Final = "dp-max-grad-norm"  # C
DP_SAMPLE_RATE: Final = "dp-sample-rate"  # q
DP_STEPS: Final = "dp-steps"  # DP-SGD steps taken so far (empty samples included)
DP_REFUSED: Final = "dp-refused"  # 1: the merchant refused this round (budget)
DP_CLIPPED: Final = "dp-clipped-fraction"
DP_UNIT_FIELD: Final = "privacy-unit"
DP_ACCOUNTANT_FIELD: Final = "accountant"
DP_REASON_FIELD: Final = "refusal"
ITEM_COUNTS_KEY: Final = "item-counts"  # ArrayRecord of a count release
ITEM_PRIOR_KEY: Final = "item-prior"  # ArrayRecord the coordinator sends with the model


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
MERCHANT_OPTIMIZER_FILE: Final = "optimizer_state.pt"  # keep-optimizer-state: Adam's moments
FEDERATION_FILE: Final = "federation.json"
ITEM_PRIOR_FILE: Final = "item_prior.npz"
MERCHANT_PRIVACY_FILE: Final = "privacy_account.json"
MERCHANT_NOISE_KEY_FILE: Final = "noise.key"  # secret seed material for DP noise; never sent
MERCHANT_POLICY_FILE: Final = "policy.json"  # the merchant's own settings, e.g. epsilon-max
MERCHANT_LEDGER_FILE: Final = "ledger.jsonl"  # the merchant's signed privacy ledger
MERCHANT_LEDGER_KEY_FILE: Final = "ledger.key"  # its Ed25519 signing key; never sent
RUN_LEDGER_DIR: Final = "ledger"  # the federation ledger (coordinator) inside a run directory
FEDERATION_LEDGER_FILE: Final = "federation.jsonl"
COORDINATOR_KEY_FILE: Final = "coordinator.key"  # the coordinator's signing key
OPERATOR_PUBLIC_KEY_FILE: Final = "operator.pub"  # its public half: merchants pin it at enrolment
RUN_SIGNATURE_SETTING: Final = "run-signature"  # the operator's signature over a run's settings

# --- Ledger exchange in messages ----------------------------------------------
LEDGER_KEY: Final = "ledger"  # ConfigRecord in replies: the merchant's new signed entries
LEDGER_ENTRIES_FIELD: Final = "entries"
LEDGER_HAVE: Final = "ledger-have"  # in instructions: newest seq the coordinator holds (-1: none)
LEDGER_HEAD: Final = "ledger-head"  # in instructions: the coordinator's countersigned head
LEDGER_ACK: Final = "ledger-ack"  # in instructions: the signed ledger-have (privacy/held_ack.py)

# --- Deployment: the coordinator ----------------------------------------------
COORDINATOR_PORT: Final = 9092  # the public port merchants dial by default (Fleet API, nginx)

# --- Deployment: a merchant's state directory (``fedrec merchant join --state``) ----
MERCHANT_EVENTS_FILE: Final = "events.parquet"  # the event log, user IDs pseudonymised
MERCHANT_INFO_FILE: Final = "merchant.json"  # name, source file digest, counts
MERCHANT_PSEUDONYM_KEY_FILE: Final = "pseudonym.key"  # HMAC key for user IDs; never sent
MERCHANT_CATALOG_DIGEST_FILE: Final = "catalog.sha256"  # catalog data.npz was encoded with
MERCHANT_CATALOG_FILE: Final = "catalog.json"  # that catalog itself (serving maps keys with it)
MERCHANT_MODELS_DIR: Final = "models"  # global models received, one version each (fedrec serve)
# what the merchant serves after a private run, and why (common.source_choice); never sent
MERCHANT_SOURCE_CHOICE_FILE: Final = "serving_source.json"
CATALOG_ACTION: Final = "catalog"  # message type "query.catalog": the set-up exchange
CATALOG_KEY: Final = "catalog"  # ConfigRecord: the federation catalog sent at setup
CATALOG_ITEMS_FIELD: Final = "items"
CATALOG_DIGEST_FIELD: Final = "sha256"
RUN_NAME_FIELD: Final = "run-name"  # in instructions: the run's name (stable across a resume)
SECAGG_FIELD: Final = "secagg"  # in a train instruction: the update travels only inside SecAgg+
# In a train instruction: how the update should travel; in a reply: how it does travel.
COMPRESSION_FIELD: Final = "compression"
TOPK_FRACTION_FIELD: Final = "topk-fraction"
