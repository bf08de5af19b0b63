"""Studies (issue 25): the paper's open questions, the mean-field limit, the coordinate check and transfer
(`cotresnet-study`), and published claims checked for their form (`cotresnet-reproduce`), each from one command
with a figure and a verdict. One module per study; stats (fits, intervals), figures and common (verdicts, files,
jobs, the plain loop) are shared; cli holds both commands and their entries. docs/studies.md has the results."""
