"""Teams as a security boundary: identities and roles, authorisation decisions, approvals,
the audit trail, dataset locations and data residency.

May import ``mlops.config``, ``mlops.atomic_files`` and ``mlops.data.storage``; never
Prefect, flows, tasks or infra (the gateway in ``infra`` enforces these decisions).
"""
