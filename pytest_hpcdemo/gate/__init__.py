"""The regression gate: saved histories, their statistics, the plugin and the continuous comparison."""
