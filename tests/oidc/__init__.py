"""A real OpenID provider (oidc-provider on Node.js) that the tests start on loopback: ``provider.py``."""
