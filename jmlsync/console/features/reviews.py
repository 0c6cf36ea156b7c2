"""Access reviews in the console."""

from __future__ import annotations

from jmlsync.console.pages import Feature

FEATURE = Feature("reviews", ())
