"""The Ray chapter: the session's local cluster and the plugin that starts it."""
