"""The node's facts: fingerprint, peak memory, limits, scaling study, oversubscription, and their plugin."""
