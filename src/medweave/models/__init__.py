"""Encoders, fusion strategies, task heads, estimators, baselines and bundles."""
