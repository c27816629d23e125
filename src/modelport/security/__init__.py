"""Access control: API keys, roles and scopes, rate limits and quotas, usage records (docs/security.md)."""
