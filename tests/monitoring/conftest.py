"""The served registry of the serving tests (two versions of `credit`, aliases production and staging)."""

from tests.serving.conftest import served_home

__all__ = ["served_home"]
