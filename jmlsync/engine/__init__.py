"""The engine: planning, applying and retrying changes against targets."""
