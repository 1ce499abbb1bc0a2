"""`make deploy`: every deployment in deployments/prefect.yaml, on this machine's workers.

The file's pull step clones the repository, as remote workers need; local process workers
run from this checkout instead, so the same deployments are deployed with a
local-directory pull step. Nothing else differs between the two.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import yaml

from infra.credentials import local_auth
from mlops.config import Settings
from mlops.governance.identities import Role
from mlops.registry import current_git_commit

ROOT = Path(__file__).resolve().parents[1]
PREFECT_FILE = ROOT / "deployments" / "prefect.yaml"
TEAMS_FILE = ROOT / "infra" / "teams.yaml"


def local_prefect_file(source: Path, checkout: Path) -> dict:
    """The prefect.yaml content with a pull step that runs from ``checkout``."""
    config = yaml.safe_load(source.read_text())
    config["pull"] = [{"prefect.deployments.steps.set_working_directory":
                       {"directory": str(checkout)}}]
    return config


def deploy_command(prefect_file: Path) -> list[str]:
    """The one deploy command, shared with the CI workflow."""
    return [str(Path(sys.executable).parent / "prefect"), "--no-prompt", "deploy", "--all",
            "--prefect-file", str(prefect_file)]


def deploy_local(settings: Settings, source: Path = PREFECT_FILE,
                 teams_file: Path = TEAMS_FILE) -> subprocess.CompletedProcess:
    """Deploy as the caller's credentials, else as the teams file's deployer (CI's
    account) from the local secrets file."""
    target = settings.stage_dir("platform") / "prefect.local.yaml"
    target.write_text(yaml.safe_dump(local_prefect_file(source, ROOT), sort_keys=False))
    env = {**os.environ, "PREFECT_API_URL": os.environ.get("PREFECT_API_URL",
                                                           settings.prefect_api_url),
           "MLOPS_GIT_COMMIT": current_git_commit(ROOT),
           **local_auth(settings, teams_file, Role.DEPLOYER, os.environ)}
    return subprocess.run(deploy_command(target), cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=600)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.flow_deployments", description=__doc__)
    parser.add_argument("--prefect-file", type=Path, default=PREFECT_FILE)
    parser.add_argument("--teams", type=Path, default=Settings().teams_file or TEAMS_FILE,
                        help="the teams file whose deployer account deploys")
    args = parser.parse_args(argv)
    result = deploy_local(Settings(), args.prefect_file, args.teams)
    print(result.stdout[-6000:])
    if result.returncode != 0:
        print(result.stderr[-6000:], file=sys.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
