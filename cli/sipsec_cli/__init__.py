"""sipsec umbrella CLI (the composition root)."""
