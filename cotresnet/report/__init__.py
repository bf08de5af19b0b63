"""After the fact: the sweep table, its figures and report, the run figures, the threshold report, the sweep
monitor and the audit of a run (cotresnet-diagnose)."""
