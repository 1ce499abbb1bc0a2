"""Prefect tasks: one module per stage, each a thin wrapper over one core call."""
