"""``python -m infra.gateway --teams FILE``: the gateway on the public Prefect port.

Its secrets come from the environment only (``MLOPS_PREFECT_SERVER_AUTH``: the server's
auth string; ``MLOPS_GATEWAY_SESSION_KEY``: the cookie key; and the ``MLOPS_SECRET_*`` that
the teams file's ``env:`` credentials name), never from the command line. Its audit trail
is the settings' (``open_audit_log``: on the local profile the data directory's file and
key, on the production one PostgreSQL and ``MLOPS_AUDIT_KEY``), opened once at start-up.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import uvicorn

from infra.gateway.app import GatewayConfig, create_app
from mlops.config import Settings
from mlops.governance.audit.log import open_audit_log
from mlops.governance.audit.records import AuditUnavailable


def main(argv: list[str] | None = None) -> int:
    settings = Settings()
    parser = argparse.ArgumentParser(prog="python -m infra.gateway",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--teams", type=Path, default=settings.teams_file or Path(
        "infra/teams.yaml"), help="the teams file: identities, roles, queues")
    parser.add_argument("--host", default=settings.platform_host)
    parser.add_argument("--port", type=int, default=settings.prefect_port)
    parser.add_argument("--upstream", default=settings.prefect_server_url,
                        help="the Prefect server's origin")
    parser.add_argument("--upstream-retries", type=int, default=3,
                        help="retries of a call the server answers 503 (default 3)")
    args = parser.parse_args(argv)
    if settings.prefect_server_auth is None or settings.gateway_session_key is None:
        print("MLOPS_PREFECT_SERVER_AUTH and MLOPS_GATEWAY_SESSION_KEY must be set",
              file=sys.stderr)
        return 2
    try:  # no key (production), or a key file that cannot be used: refuse to start
        audit = open_audit_log(settings)
    except AuditUnavailable as exc:
        print(f"the gateway cannot start without its audit trail: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for name in ("casbin", "casbin.enforcer", "casbin.policy", "casbin.role"):
        logging.getLogger(name).setLevel(logging.ERROR)  # refusals are logged by the gateway
    logging.getLogger("httpx").setLevel(logging.WARNING)
    app = create_app(GatewayConfig(
        teams_file=args.teams.resolve(), upstream=args.upstream,
        upstream_auth=settings.prefect_server_auth.get_secret_value(),
        session_key=settings.gateway_session_key.get_secret_value(), environ=os.environ,
        audit=audit, upstream_retries=args.upstream_retries))
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning",
                    access_log=False, ws="websockets-sansio", lifespan="on")
    finally:
        audit.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
