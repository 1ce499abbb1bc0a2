"""Prefect flows: composition of stage tasks only."""
