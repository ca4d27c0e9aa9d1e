"""ray: fixtures and hooks (see the issue that builds them)."""
