"""Flower ServerApp: a thin shell over the round loop (:mod:`server.rounds`).

The coordinator sees only shared parameters and the metrics merchants chose
to release. It writes ``global_model.pt`` (shared parameters only) and
``federation.json`` (per-round, per-merchant history) to ``output-dir``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from common.config import RoundPlan, RunConfig, parse_run_config
from server.rounds.admission import wait_for_nodes
from server.rounds.loop import run_federation
from server.rounds.outputs import save_catalog, save_outputs
from server.rounds.progress import PROGRESS_FILE, Progress
from server.rounds.records import RoundRecord
from server.rounds.start import (
    announce,
    check_merchants_dir,
    initial_arrays,
    open_ledger,
    run_options,
    strategy_for,
)

# A child of Flower's logger, so these lines reach `flwr log` under the Deployment/Simulation
# runtimes, and follow fedrec's --verbose switch in `fedrec simulate`.
logger = logging.getLogger(f"flwr.fedrec.{__name__}")


def make_server_app(
    config: RunConfig | None = None, *, on_round: Callable[[RoundRecord], None] | None = None
) -> ServerApp:
    """A ServerApp bound to ``config``, or reading the run config when ``None`` (``flwr run``)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run = config if config is not None else parse_run_config(context.run_config)
        check_merchants_dir(run)
        initial, warm = initial_arrays(run)
        output = Path(run.output_dir or f"runs/flwr-run-{context.run_id}").resolve()
        options = run_options(run, output, context)
        save_catalog(output, options.catalog)
        nodes = wait_for_nodes(
            grid, min_nodes=run.federation.min_nodes, timeout=run.federation.node_wait_timeout
        )
        announce(run, nodes)
        strategy, client_dp = strategy_for(run, nodes, options)
        ledger = open_ledger(run, output, options)
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
        save_outputs(output, run, result, warm=warm)
        progress.finish(result.stopped_early)
        logger.info("federation finished; global model and history in %s", output)

    return app


app = make_server_app()
