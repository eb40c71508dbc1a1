"""Experiment tracking beside the flow: the W&B sink (never fatal) and a reader for wandb's offline run files."""
