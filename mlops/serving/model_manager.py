"""Which model version the service serves, and how it changes without a failed request.

The manager follows a source (the registry's ``champion`` alias, or a fixed local file).
On a refresh (polling, or the admin reload) it loads the designated version beside the
one serving, verifies its sha256, checks it, warms it up, and only then swaps one
reference: a request holds the predictor it started with, so none fails during a swap.
A version that fails any step is refused, remembered (polling does not retry it) and
the old one keeps serving. Rollback returns to the previous version and holds the one
rolled back from until the alias moves elsewhere or an operator reloads.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel

from mlops.registry import RegistryError, fetch_model, version_by_alias
from mlops.serving.predictor import ModelContractError, ModelIntegrityError, OnnxPredictor

log = logging.getLogger(__name__)
Status = Literal["loaded", "unchanged", "refused", "rolled_back"]


class ModelSourceError(RuntimeError):
    """The source cannot say which version to serve, or cannot deliver it."""


class NothingToRollBack(RuntimeError):
    """No previous version is held in memory."""


class SwapResult(BaseModel):
    status: Status
    serving: str | None  # the version served after the call
    version: str | None = None  # the version this call was about
    detail: str = ""


@dataclass
class ModelBytes:
    name: str
    version: str
    data: bytes
    sha256: str | None
    label: str  # how errors name it: a model URI or a file path


class ModelSource(Protocol):
    uri: str

    def resolve(self) -> str: ...
    def fetch(self, version: str) -> ModelBytes: ...


class RegistrySource:
    """``models:/<name>@<alias>`` (follows the alias) or ``models:/<name>/<version>``."""

    def __init__(self, tracking_uri: str, uri: str) -> None:
        if not uri.startswith("models:/") or not ("@" in uri or "/" in uri[8:]):
            raise ModelSourceError(f"model URI {uri!r} must be models:/<name>@<alias> "
                                   "or models:/<name>/<version>")
        self.tracking_uri, self.uri = tracking_uri, uri
        ref = uri.removeprefix("models:/")
        self.name, self.alias = ref.split("@", 1) if "@" in ref else (ref.rsplit("/", 1)[0],
                                                                     None)
        self._fixed = None if self.alias else ref.rsplit("/", 1)[1]

    def resolve(self) -> str:
        if self._fixed is not None:
            return self._fixed
        try:
            return version_by_alias(self.tracking_uri, self.name, self.alias)
        except RegistryError as exc:
            raise ModelSourceError(str(exc)) from None

    def fetch(self, version: str) -> ModelBytes:
        label = f"models:/{self.name}/{version}"
        with tempfile.TemporaryDirectory(prefix="mlops-model-") as folder:
            try:
                fetched = fetch_model(self.tracking_uri, label, Path(folder))
            except RegistryError as exc:
                raise ModelSourceError(str(exc)) from None
            data = Path(fetched.path).read_bytes()
        return ModelBytes(self.name, version, data, fetched.sha256, label)


class FileSource:
    """One local ONNX file with its expected sha256 (``--onnx``)."""

    def __init__(self, path: Path, sha256: str | None, name: str, version: str) -> None:
        self.path, self.sha256, self.name, self.version = path, sha256, name, version
        self.uri = str(path)

    def resolve(self) -> str:
        return self.version

    def fetch(self, version: str) -> ModelBytes:
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise ModelSourceError(f"cannot read model file {self.path}: {exc}") from None
        return ModelBytes(self.name, version, data, self.sha256, str(self.path))


Check = Callable[[OnnxPredictor], None]  # raises ModelContractError to refuse a version
Listener = Callable[[SwapResult, "OnnxPredictor | None"], None]


class ModelManager:
    """The served predictor, the previous one, and the rules for changing them."""

    def __init__(self, source: ModelSource, threads: int | None = None,
                 require_sha256: bool = True, check: Check | None = None,
                 listener: Listener | None = None) -> None:
        self.source, self.threads, self.require_sha256 = source, threads, require_sha256
        self._check, self.listener = check, listener
        self.current: OnnxPredictor | None = None
        self.previous: OnnxPredictor | None = None
        self.refused: dict[str, str] = {}  # version -> why
        self.held: str | None = None  # rolled back from; polling skips it
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def refresh(self, forced: bool = False) -> SwapResult:
        """Serve the version the source designates now (forced: retry refused/held ones)."""
        with self._lock:
            version = self.source.resolve()
            serving = self.current.version if self.current else None
            if version == serving:
                return self._tell(SwapResult(status="unchanged", serving=serving,
                                             version=version))
            if not forced and (version == self.held or version in self.refused):
                why = self.refused.get(version, "rolled back from; reload to serve it again")
                return SwapResult(status="unchanged", serving=serving, version=version,
                                  detail=why)
            try:
                predictor = self._load(version)
            except (ModelIntegrityError, ModelContractError, ModelSourceError) as exc:
                self.refused[version] = str(exc)
                log.error("refused version %s, still serving %s: %s", version, serving, exc)
                return self._tell(SwapResult(status="refused", serving=serving,
                                             version=version, detail=str(exc)))
            self.previous, self.current, self.held = self.current, predictor, None
            self.refused.pop(version, None)
            log.info("now serving %s version %s (was %s)", predictor.name, version, serving)
            return self._tell(SwapResult(status="loaded", serving=version, version=version))

    def rollback(self) -> SwapResult:
        """Serve the previous version again; the current one is held back from polling."""
        with self._lock:
            if self.previous is None or self.current is None:
                raise NothingToRollBack("no previous version is loaded; nothing to roll back to")
            self.held = self.current.version
            self.current, self.previous = self.previous, self.current
            log.warning("rolled back from version %s to %s", self.held, self.current.version)
            return self._tell(SwapResult(status="rolled_back", serving=self.current.version,
                                         version=self.held))

    def _load(self, version: str) -> OnnxPredictor:
        model = self.source.fetch(version)
        if model.sha256 is None and self.require_sha256:
            raise ModelIntegrityError(f"{model.label} has no sha256 tag; refusing to serve an "
                                      "unverified model")
        predictor = OnnxPredictor.from_bytes(model.data, model.label, model.sha256, model.name,
                                             version, self.threads)
        if self._check is not None:
            self._check(predictor)
        return predictor

    def _tell(self, result: SwapResult) -> SwapResult:
        if self.listener is not None:
            self.listener(result, self.current)
        return result

    def poll(self, interval_s: float) -> threading.Thread:
        """Refresh every ``interval_s`` seconds in a daemon thread until ``stop()``."""
        def loop() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.refresh()
                except ModelSourceError as exc:
                    log.warning("model poll failed, still serving %s: %s",
                                self.current.version if self.current else None, exc)
                except Exception:  # keep polling whatever a registry client raises
                    log.exception("model poll failed")

        thread = threading.Thread(target=loop, name="model-poll", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()
