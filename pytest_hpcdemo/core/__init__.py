"""The core: measurement, hardware detection, claims, session state, markers, options, workloads."""
