"""Everything a run needs before its first round: model, options, strategy, ledger.

The ServerApp (:mod:`server.server_app`) only translates Flower's ``Grid``
and ``Context`` into these typed calls.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.config import RunConfig, to_run_config
from common.constants import (
    COORDINATOR_KEY_FILE,
    MERCHANT_DATA_FILE,
    MERCHANT_USERS_FILE,
    RUN_CATALOG_FILE,
    RUN_LEDGER_DIR,
    RUN_METRICS_FILE,
)
from common.data.catalog import ItemCatalog
from common.errors import ConfigError
from server.rounds.records import RunOptions

if TYPE_CHECKING:
    from flwr.app import ArrayRecord, Context
    from flwr.serverapp.strategy import FedAvg

    from server.client_privacy import ClientDP
    from server.ledger import FederationLedger
    from server.rounds.previous_model import WarmStart

logger = logging.getLogger(f"flwr.fedrec.{__name__}")  # reaches `flwr log`; see server_app


def check_merchants_dir(config: RunConfig) -> None:
    """Refuse to train on the merchants of a finished simulation (``flwr run`` on ``runs/demo``).

    Their states and signed ledgers are that run's published record: a new run
    would append to them and spend their privacy accounts. A copy is a new federation.
    """
    if not config.merchants_dir:
        return
    merchants = Path(config.merchants_dir).resolve()
    run_dir = merchants.parent
    if (run_dir / RUN_METRICS_FILE).is_file():
        raise ConfigError(
            f"merchants-dir={config.merchants_dir} belongs to the finished run {run_dir} (it has "
            f"{RUN_METRICS_FILE}); its merchants' states and signed ledgers are that run's record "
            "and are not trained again. Train a copy of its data instead: each merchant's "
            f"{MERCHANT_DATA_FILE} and {MERCHANT_USERS_FILE}, and {RUN_CATALOG_FILE} beside "
            "merchants/ (the README's `flwr run` recipe makes one)."
        )


def run_catalog(config: RunConfig) -> ItemCatalog | None:
    """The federation catalog: the config's file, or the one beside the merchants (if any)."""
    if config.catalog:
        return ItemCatalog.read(config.catalog)
    if config.merchants_dir:
        path = Path(config.merchants_dir).parent / RUN_CATALOG_FILE
        if path.is_file():
            return ItemCatalog.load(path)
    return None


def catalog_size(config: RunConfig) -> int:
    """Items in the federation catalog: from the config, or the catalog beside the merchants."""
    if config.num_items > 0:
        return config.num_items
    catalog = run_catalog(config)
    if catalog is not None:
        return len(catalog)
    raise ConfigError(
        "The coordinator needs the catalog size: set num-items (e.g. --run-config "
        "'num-items=1500'), or merchants-dir to the merchants/ folder of a prepared run "
        f"(it reads the {RUN_CATALOG_FILE} beside it), as `fedrec simulate` writes."
    )


def initial_arrays(run: RunConfig) -> tuple[ArrayRecord, WarmStart | None]:
    """The global model's shared parameters before round 1: from the run's seed, or warm.

    With ``init-from`` the earlier run's global model replaces the seeded
    parameters, item rows matched by key (:mod:`server.rounds.previous_model`).
    """
    from flwr.app import ArrayRecord

    from common.models.base import build_model
    from common.seeding import torch_generator

    model = build_model(
        run.model,
        num_users=0,
        num_items=catalog_size(run),
        generator=torch_generator(run.federation.seed, "global-init"),
    )
    shared = {n: p.detach().clone() for n, p in model.shared_parameters().items()}
    warm = None
    if run.init_from:
        from server.rounds.previous_model import warm_parameters

        shared, warm = warm_parameters(run, shared, run_catalog(run))
        logger.info("%s", warm.describe())
    return ArrayRecord(torch_state_dict=OrderedDict(shared.items())), warm


def run_options(run: RunConfig, output: Path, context: Context) -> RunOptions:
    """Deployment extras: run name, catalog, SecAgg+, checkpoint and resume."""
    from server.rounds.checkpoint import CHECKPOINT_FILE, check_resumable, load_checkpoint

    checkpoint_path = output / CHECKPOINT_FILE
    settings = to_run_config(run)
    resume = None
    if run.resume:
        resume = load_checkpoint(checkpoint_path)
        if resume is None:
            raise ConfigError(
                f"resume=true but {output} has no {CHECKPOINT_FILE}: nothing to resume. Submit "
                "the run without --resume to start it."
            )
        check_resumable(resume, settings, path=checkpoint_path)
    elif checkpoint_path.is_file():
        raise ConfigError(
            f"{output} already holds a run ({CHECKPOINT_FILE}); resume it with resume=true "
            "(fedrec run --resume NAME) or choose another run name."
        )
    return RunOptions(
        run_name=output.name,
        catalog=ItemCatalog.read(run.catalog) if run.catalog else None,
        secagg=run.secagg if run.secagg.enabled else None,
        compression=run.compression,
        context=context,
        checkpoint=checkpoint_path,
        resume=resume,
        settings=settings,
        poll=float(os.environ.get("FEDREC_GRID_POLL", "0.1")),  # seconds between reply pulls
        **statistics_options(run),
    )


def statistics_options(run: RunConfig) -> dict[str, Any]:
    """For a statistics model: how many items it covers and the sigma of each release."""
    from common.models.registry import MODELS

    if not MODELS[run.model.kind].statistics:
        return {}
    from common.privacy.accountant import statistics_noise

    return {
        "statistics_items": min(run.model.ease_items, catalog_size(run)),
        "statistics_noise": statistics_noise(run.privacy, rounds=run.federation.num_rounds),
    }


def announce(run: RunConfig, nodes: list[int]) -> None:
    """One start-up summary: a node/merchant mismatch, and the privacy the run gives."""
    root = Path(run.merchants_dir) if run.merchants_dir else None
    expected = sum(1 for p in root.iterdir() if p.is_dir()) if root and root.is_dir() else 0
    if expected and len(nodes) != expected:
        logger.warning(
            "%d node(s) connected but %s holds %d merchant directories; merchants without a "
            "node do not train, nodes without a merchant fail. Run one node per merchant "
            "(flwr run ... --federation-config num-supernodes=%d).",
            len(nodes),
            run.merchants_dir,
            expected,
            expected,
        )
    if run.privacy.enabled:
        logger.info(
            "differential privacy: unit %s, target epsilon %g at delta %g (%s accountant)",
            run.privacy.unit,
            run.privacy.target_epsilon,
            run.privacy.delta,
            run.privacy.accountant,
        )
    else:
        logger.warning(
            "differential privacy is OFF: merchants release unclipped, un-noised updates"
        )


def strategy_for(
    run: RunConfig, nodes: list[int], options: RunOptions
) -> tuple[FedAvg, ClientDP | None]:
    """The run's strategy, wrapped in Flower's client-level DP when the unit is the client."""
    from server.strategy import build_strategy, train_sample_size

    strategy = build_strategy(run.federation, run.train, num_nodes=len(nodes))
    if run.privacy.unit != "client":
        return strategy, None
    from server.client_privacy import build_client_dp

    client_dp = build_client_dp(
        strategy,
        run.privacy,
        rounds=run.federation.num_rounds,
        sampled=train_sample_size(run.federation, num_nodes=len(nodes)),
        population=len(nodes),
        restore=options.resume.client_privacy if options.resume else None,
    )
    logger.info(
        "client-level DP: sigma %.4f, update clip %g, %d of %d clients per round",
        client_dp.noise_multiplier,
        client_dp.clipping_norm,
        client_dp.sampled,
        client_dp.population,
    )
    return client_dp.strategy, client_dp


def open_ledger(run: RunConfig, output: Path, options: RunOptions) -> FederationLedger:
    """The federation ledger of this run, signed with the coordinator's key."""
    from server.ledger import FederationLedger

    output.mkdir(parents=True, exist_ok=True)
    key = Path(run.coordinator_key) if run.coordinator_key else output / COORDINATOR_KEY_FILE
    return FederationLedger(output / RUN_LEDGER_DIR, run=options.run_name, key_path=key)
