"""Interaction data: schema, loaders, catalog, splitting and partitioning."""
