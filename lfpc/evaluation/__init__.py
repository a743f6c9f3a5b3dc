"""Benchmark evaluation: batched greedy rollouts with resume, torchmetrics aggregation, paper-style tables."""
