"""The Numba chapter: threading-layer probes in a child process and the plugin."""
