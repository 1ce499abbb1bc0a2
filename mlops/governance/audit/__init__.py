"""The audit trail: an append-only, hash-chained record of every governance action, each
record sealed with an HMAC of the platform key.

``records`` (actions, records, canonical encoding, sealing), ``verify`` (the walk over the
chain and the kinds of break), ``file_store`` (the local profile's JSON lines) and
``postgres_store`` (the production profile's INSERT-only table, read ahead by
``read_ahead``), and ``log`` (``open_audit_log``: the store for the settings, and the key).
"""
