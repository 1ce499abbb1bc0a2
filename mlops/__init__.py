"""The platform's core: plain, typed Python for every stage, one package per subsystem.

No module here imports Prefect, ``flows``, ``tasks`` or ``infra`` (a test holds that), so
every stage runs and is tested as plain Python. Top-level modules are shared by all
packages: ``config`` (settings and the dataset spec: the only reader of the environment),
``registry`` (the only MLflow client), ``atomic_files`` (never half-written files and
their hashes) and ``processes`` (background processes with pid and log files).
"""
