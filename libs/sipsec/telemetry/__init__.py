"""sipsec."""
