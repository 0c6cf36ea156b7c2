"""Running the process: the readiness and metrics HTTP endpoint, metrics, logs, alerts and
their delivery, the HTTP server under the application (TLS, forwarded headers), systemd."""
