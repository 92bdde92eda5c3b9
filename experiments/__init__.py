"""Experiments: configs and runner, the demo, tracking, dashboard, benchmarks. Wires every layer."""
