"""Merchant-side serving: ``fedrec serve`` answers Recommend/Similar over gRPC from local state."""
