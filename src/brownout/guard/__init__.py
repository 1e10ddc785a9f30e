"""Guard policies."""
