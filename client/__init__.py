"""Merchant side: the ClientApp shell, local training, durable per-merchant state."""
