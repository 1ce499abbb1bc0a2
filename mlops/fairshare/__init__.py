"""Fair share of the work pools between teams: the teams file, the provisioning plan it
implies, the allocation policy (Kueue's cohort semantics), GPU-hour budgets and the
controller's Prometheus gauges. Pure: no Prefect, no clock.

May import ``mlops.config`` only; ``infra`` runs it against Prefect.
"""
