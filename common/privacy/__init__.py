"""Differential privacy: settings, accounting math, accountant state, private counts."""
