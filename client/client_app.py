"""Flower ClientApp: translates Messages to typed calls on this node's merchant and back.

Each handler resolves the node's :class:`~client.merchant.Merchant`
(:mod:`client.node`), reads the instruction (:mod:`client.messages`), lets
:mod:`client.handlers` do the work and answers with the typed reply as records.
A reply carries only what a merchant may release; user parameters stay in the
merchant's state directory.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod

from client import handlers, messages
from client.node import process_age, resolve_merchant, state_dir
from client.secagg import secagg_mod
from common.config import RunConfig, parse_run_config
from common.constants import CATALOG_ACTION
from common.errors import ConfigError


def make_client_app(config: RunConfig | None = None, *, mods: Sequence[Mod] = ()) -> ClientApp:
    """A ClientApp bound to ``config``, or reading the run config when ``None`` (``flwr run``).

    ``mods`` are Flower client mods wrapped around every call (e.g. to inspect replies).
    """
    app = ClientApp(mods=[*mods, secagg_mod])  # outer mods see what actually leaves

    def settings(context: Context) -> RunConfig:
        return config if config is not None else parse_run_config(context.run_config)

    @app.train()
    def train(message: Message, context: Context) -> Message:
        entered, age = time.perf_counter(), process_age()
        run = settings(context)
        merchant = resolve_merchant(run, context.node_config)
        task = messages.train_instruction(message, run, run_id=context.run_id)
        reply = handlers.train(merchant, task, entered=entered, age=age)
        return messages.reply_message(message, merchant, reply)

    @app.query(CATALOG_ACTION)
    def catalog(message: Message, context: Context) -> Message:
        """Deployment set-up: encode this merchant's enrolled log through the federation catalog."""
        state = state_dir(context.node_config)
        if state is None:
            raise ConfigError("A catalog was sent to a node without a state-dir (not a merchant).")
        keys, sent_digest = messages.catalog_request(message)
        reply = handlers.encode_catalog(state, keys, sent_digest=sent_digest)
        merchant = resolve_merchant(settings(context), context.node_config)
        return messages.reply_message(message, merchant, reply)

    @app.query()
    def query(message: Message, context: Context) -> Message:
        """A private item-count release (once per training), recorded before it leaves."""
        run = settings(context)
        merchant = resolve_merchant(run, context.node_config)
        task = messages.counts_instruction(message, run, run_id=context.run_id)
        return messages.reply_message(message, merchant, handlers.release_counts(merchant, task))

    @app.evaluate()
    def evaluate(message: Message, context: Context) -> Message:
        started = time.perf_counter()
        run = settings(context)
        merchant = resolve_merchant(run, context.node_config)
        task = messages.evaluate_instruction(message, run, run_id=context.run_id)
        reply = handlers.evaluate(
            merchant,
            task,
            started=started,
            state=state_dir(context.node_config),
            settings=dict(context.run_config),
        )
        return messages.reply_message(message, merchant, reply)

    return app


app = make_client_app()
