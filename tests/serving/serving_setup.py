"""What the serving tests share besides fixtures: the admin token and a loaded manager.

A module of its own (not conftest.py), so test modules import it by a name no other test
folder uses.
"""

from __future__ import annotations

from pathlib import Path

from mlops.serving.model_manager import FileSource, ModelManager

ADMIN_TOKEN = "test-admin-token-0123456789"


def serving_manager(path: Path, sha: str | None, name: str = "synthetic",
                    version: str = "3") -> ModelManager:
    """A manager serving a local file (loaded, verified, warmed)."""
    manager = ModelManager(FileSource(path, sha, name, version))
    assert manager.refresh().status == "loaded"
    return manager
