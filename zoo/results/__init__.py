"""Stage 4 of the flow: the results store, the source of truth the measurement and the leaderboard read."""
from zoo.results.record import TERMINAL, RunRecord, RunStatus
from zoo.training.epoch import EpochMetrics
from zoo.results.store import RESULTS_FILE, ResultsStore, append_jsonl, read_jsonl

__all__ = ["RESULTS_FILE", "TERMINAL", "EpochMetrics", "ResultsStore", "RunRecord", "RunStatus", "append_jsonl",
           "read_jsonl"]
