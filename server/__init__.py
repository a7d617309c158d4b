"""Coordinator side: the ServerApp shell, strategies, the round loop, checkpoints."""
