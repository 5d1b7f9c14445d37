"""Experiments: the attention-type comparison, its statistics and report, and the speed benchmarks."""
