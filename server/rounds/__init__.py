"""The coordinator's round loop, one phase per module.

- :mod:`server.rounds.loop`: :class:`~server.rounds.loop.RoundLoop`, the loop
  itself (admit, set up, prior, then train / evaluate / checkpoint per round).
- :mod:`server.rounds.records`: what a round and a run produce, and the run's options.
- :mod:`server.rounds.replies`: reading merchants' replies (names, metrics,
  privacy reports, refusals) and judging their updates.
- :mod:`server.rounds.catalog`: the deployment catalog exchange and late joiners.
- :mod:`server.rounds.prior`: the private item-count release and the item prior.
- :mod:`server.rounds.train`: one train round over a transport, then aggregation.
"""
