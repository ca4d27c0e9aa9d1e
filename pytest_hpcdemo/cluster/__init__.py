"""Clusters on one machine: simulated hosts (network namespaces) and the runs across them."""
