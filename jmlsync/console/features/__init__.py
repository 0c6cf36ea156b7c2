"""The console's features: one module each, exposing ``FEATURE`` (see :mod:`..pages`)."""
