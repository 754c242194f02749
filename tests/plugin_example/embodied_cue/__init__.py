"""Example embodied plugin (see pyproject.toml)."""
