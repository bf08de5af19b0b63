"""The run directory: its contract (file names, columns, the summary schema, readers and writers), who owns
it (identity, lock, plan) and crash-safe writes. No torch at import."""
