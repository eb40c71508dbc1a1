"""Stage 4 of the flow: the results store, the source of truth the measurement and the leaderboard read."""
from zoo.results.store import RESULTS_FILE, TERMINAL, ResultsStore, append_jsonl, read_jsonl

__all__ = ["RESULTS_FILE", "TERMINAL", "ResultsStore", "append_jsonl", "read_jsonl"]
