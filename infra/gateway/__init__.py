"""The front door of Prefect: an authenticating, authorising reverse proxy.

People log in on its page and get a session cookie; CI and services send ``name:secret``
(Basic or Bearer). Each call is classified into an action on a team (``routes``,
``ownership``, ``trigger``), decided by ``mlops.governance.policy`` and then forwarded to the
Prefect server with the server's own auth string (``proxy``), WebSockets included.
``python -m infra.gateway`` runs it (``make up`` starts it on the public Prefect port).
Every 401 and 403, every run it lets through and every teams-file change it writes is in
the audit trail (``audit``); a trigger or change the trail cannot record is not made (503).
"""
