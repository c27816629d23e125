"""Release management: traffic policies on aliases, their numbers, retention (docs/releases.md)."""
