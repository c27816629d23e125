"""API routes of this package (being built, issue 18): wired into serving/rest.py's route table."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["ROUTES"]

ROUTES: tuple[tuple[str, re.Pattern[str], Any, bool, str | None], ...] = ()
