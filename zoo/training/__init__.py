"""Stage 3 of the flow: one run trained (data, model, recipe, sampler, DDP), checkpointed and resumable."""
