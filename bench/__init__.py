"""Benchmarks: ratios against baselines measured in the same run, medians, never timed tests."""
