"""SQL of the service state: small facts kept between runs, one row per key."""

from __future__ import annotations

FORGET_STATE = "DELETE FROM service_state WHERE key = ?"
