"""Stage 2 of the flow: the matrix expanded into runs, each run executed and recorded in the results store."""
