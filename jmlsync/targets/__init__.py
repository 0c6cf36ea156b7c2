"""The targets: adapters of the Target port, one module per kind, opened through the registry."""
