"""Prefect flows: the training pipeline (in one flow, or one deployment per stage), the
fair-share controller's loop, and the command line that starts them (``cli``). Flows only
compose tasks and deployments; the work is in ``mlops``."""
