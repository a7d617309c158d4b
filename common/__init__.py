"""Pure core of fedrec: data, models, metrics, configuration and errors.

Nothing in this package imports ``flwr``, ``client`` or ``server``.
"""
