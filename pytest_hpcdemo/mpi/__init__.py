"""The MPI chapter (mpi4py): launcher detection, the rank session and its deadline watchdog, the plugin."""
