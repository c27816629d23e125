"""The keyed registry of tests/security (``credit`` v1 production, v2 staging; ``fraud`` v1) and its
keys, for a real server the client talks to."""

from tests.security.conftest import keyed_home, keys  # noqa: F401 (fixtures)
