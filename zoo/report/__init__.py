"""Leaderboard pieces: statistics over seeds and rank correlations, markdown tables, plots."""
