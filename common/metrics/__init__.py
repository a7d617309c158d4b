"""Evaluation metrics: leave-last-out ranking (full catalog and sampled 99-negatives)."""
