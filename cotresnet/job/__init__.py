"""One job's life: every check before any file, the fit (the Lightning module, callbacks, loggers, signals,
threads, checkpoints), progress. The only package that imports Lightning."""
