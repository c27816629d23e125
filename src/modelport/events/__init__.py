"""Being built (issue 18)."""
