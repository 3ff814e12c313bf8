"""sipsec test suite."""
