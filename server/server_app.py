"""Flower ServerApp: builds the strategy and initial model, runs the round loop, saves results.

The coordinator sees only shared parameters and the metrics merchants chose
to release. It writes ``global_model.pt`` (shared parameters only) and
``federation.json`` (per-round, per-merchant history) to ``output-dir``.
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp

from common.config import RoundPlan, RunConfig, parse_run_config, to_run_config
from common.constants import (
    COORDINATOR_KEY_FILE,
    FEDERATION_FILE,
    GLOBAL_MODEL_FILE,
    ITEM_PRIOR_FILE,
    RUN_CATALOG_FILE,
    RUN_LEDGER_DIR,
)
from common.data.catalog import ItemCatalog
from common.errors import ConfigError
from common.fileio import atomic_write_text
from common.models.base import build_model
from common.seeding import torch_generator
from server.federation import RoundRecord, RunOptions, run_federation, wait_for_nodes
from server.progress import PROGRESS_FILE, Progress
from server.strategy import build_strategy, train_sample_size

# A child of Flower's logger, so these lines reach `flwr log` under the Deployment/Simulation
# runtimes, and follow fedrec's --verbose switch in `fedrec simulate`.
logger = logging.getLogger(f"flwr.fedrec.{__name__}")


def catalog_size(config: RunConfig) -> int:
    """Items in the federation catalog: from the config, or the catalog beside the merchants."""
    if config.num_items > 0:
        return config.num_items
    if config.catalog:
        return len(ItemCatalog.read(config.catalog))
    if config.merchants_dir:
        path = Path(config.merchants_dir).parent / RUN_CATALOG_FILE
        if path.is_file():
            return len(ItemCatalog.load(path))
    raise ConfigError(
        "The coordinator needs the catalog size: set num-items (e.g. --run-config "
        "'num-items=1500'), or merchants-dir to the merchants/ folder of a prepared run "
        f"(it reads the {RUN_CATALOG_FILE} beside it), as `fedrec simulate` writes."
    )


def _merchant_count(config: RunConfig) -> int:
    root = Path(config.merchants_dir) if config.merchants_dir else None
    if root is None or not root.is_dir():
        return 0
    return sum(1 for p in root.iterdir() if p.is_dir())


def _run_options(run: RunConfig, output: Path, context: Context) -> RunOptions:
    """Deployment extras: run name, catalog, SecAgg+, checkpoint and resume."""
    from server.checkpoint import CHECKPOINT_FILE, check_resumable, load_checkpoint

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
    )


def make_server_app(
    config: RunConfig | None = None, *, on_round: Callable[[RoundRecord], None] | None = None
) -> ServerApp:
    """A ServerApp bound to ``config``, or reading the run config when ``None`` (``flwr run``)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        import torch

        run = config if config is not None else parse_run_config(context.run_config)
        model = build_model(
            run.model,
            num_users=0,
            num_items=catalog_size(run),
            generator=torch_generator(run.federation.seed, "global-init"),
        )
        output = Path(run.output_dir or f"runs/flwr-run-{context.run_id}").resolve()
        options = _run_options(run, output, context)
        initial = ArrayRecord(
            torch_state_dict=OrderedDict(
                (n, p.detach().clone()) for n, p in model.shared_parameters().items()
            )
        )
        nodes = wait_for_nodes(
            grid, min_nodes=run.federation.min_nodes, timeout=run.federation.node_wait_timeout
        )
        expected = _merchant_count(run)
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
        strategy = build_strategy(run.federation, run.train, num_nodes=len(nodes))
        client_dp = None
        if run.privacy.unit == "client":
            from server.client_privacy import build_client_dp

            client_dp = build_client_dp(
                strategy,
                run.privacy,
                rounds=run.federation.num_rounds,
                sampled=train_sample_size(run.federation, num_nodes=len(nodes)),
                population=len(nodes),
                restore=options.resume.client_privacy if options.resume else None,
            )
            strategy = client_dp.strategy
            logger.info(
                "client-level DP: sigma %.4f, update clip %g, %d of %d clients per round",
                client_dp.noise_multiplier,
                client_dp.clipping_norm,
                client_dp.sampled,
                client_dp.population,
            )
        from server.ledger import FederationLedger

        output.mkdir(parents=True, exist_ok=True)
        ledger = FederationLedger(
            output / RUN_LEDGER_DIR,
            run=options.run_name,
            key_path=Path(run.coordinator_key)
            if run.coordinator_key
            else output / COORDINATOR_KEY_FILE,
        )
        progress = Progress(
            output / PROGRESS_FILE,
            total=run.federation.num_rounds,
            done=options.resume.completed_round if options.resume else 0,
        )

        def after_round(record: RoundRecord) -> None:
            progress.round(record)
            if on_round is not None:
                on_round(record)

        try:
            result = run_federation(
                grid,
                strategy,
                initial,
                federation=run.federation,
                plan=RoundPlan(
                    train=run.train, privacy=run.privacy, num_rounds=run.federation.num_rounds
                ),
                on_round=after_round,
                client_dp=client_dp,
                ledger=ledger,
                options=options,
            )
        except Exception as error:
            progress.fail(str(error))
            raise
        output.mkdir(parents=True, exist_ok=True)
        torch.save(dict(result.arrays.to_torch_state_dict()), output / GLOBAL_MODEL_FILE)
        if result.prior is not None:
            import numpy as np

            np.savez(
                output / ITEM_PRIOR_FILE, counts=result.prior.counts, trained=result.prior.trained
            )
        history = {
            "config": to_run_config(run),
            "rounds": [record.to_json() for record in result.rounds],
            "privacy": result.privacy,
            "client_privacy": result.client_privacy,
            "stopped_early": result.stopped_early,
            "resumed_from": result.resumed_from,
            "trained_items": None if result.prior is None else len(result.prior.trained),
        }
        atomic_write_text(output / FEDERATION_FILE, json.dumps(history, indent=2))
        progress.finish(result.stopped_early)
        logger.info("federation finished; global model and history in %s", output)

    return app


app = make_server_app()
