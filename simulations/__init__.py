"""Researcher tooling: synthetic federations, the simulation runner, baselines, reports."""
