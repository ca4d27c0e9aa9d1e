"""The GPU chapter (CuPy): device-clock timing and the plugin with its fixtures."""
