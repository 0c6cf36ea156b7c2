"""Rendering for people and machines: plans, time-bound access, the SLA report, review
exports and evidence bundles, and the tables they are drawn in."""
