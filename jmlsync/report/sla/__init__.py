"""The leaver SLA report in one place: build (the figures and JSON), text (table and CSV),
html, histogram, evidence, access (the time-bound access section) and time."""
