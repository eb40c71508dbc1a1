"""Params, FLOPs (MACs with attention counted) and latency on real backends, kept in a JSON-lines store.

    from zoo.measure import measure_models
    records = measure_models(["deit_tiny"], 224, ["cpu-eager-1t"], "leaderboard/measurements.jsonl")

CLI: `python -m zoo.measure --models deit_tiny --backends cpu-eager-1t --store leaderboard/measurements.jsonl`.
"""
from zoo.measure.backends import available_backends, backend_names, get_backend
from zoo.measure.flops import MacCount, count_macs
from zoo.measure.latency import BackendSkip, LatencyBackend, LatencyStats, Outcome, TimingConfig, measure_interleaved
from zoo.measure.machine import MachineInfo, machine_info
from zoo.measure.params import count_params
from zoo.measure.store import MeasurementKey, MeasurementStore
from zoo.measure.suite import measure_models

__all__ = [
    "BackendSkip",
    "LatencyBackend",
    "LatencyStats",
    "MacCount",
    "MachineInfo",
    "MeasurementKey",
    "MeasurementStore",
    "Outcome",
    "TimingConfig",
    "available_backends",
    "backend_names",
    "count_macs",
    "count_params",
    "get_backend",
    "machine_info",
    "measure_interleaved",
    "measure_models",
]
