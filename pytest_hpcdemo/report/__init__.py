"""Reports: the claim log, the terminal summary, plots and the Markdown/HTML summary."""
