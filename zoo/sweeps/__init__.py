"""W&B sweep files: their parsing, the agent's exact command, and a local runner for machines without a server."""
