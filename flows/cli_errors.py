"""How ``mlops`` ends a command that failed: one message on stderr, the traceback in a file.

An expected failure (the input or the configuration is wrong: a bad spec, data that fails
validation, a refused location) exits 2 with the error's own message; anything else (a bug,
an outage) exits 1 with the exception's type and message. Either way the terminal gets that
one message, ending with the path of the command's log file, and no traceback: the file
keeps every record the platform and Prefect emit, with tracebacks, and the command's own
record of the failure at DEBUG.

Prefect's engine reports a failed task run and then its flow run, each time with the error
(and once with its traceback); those reports go to the file only. The terminal keeps the
progress lines of today: INFO from Prefect and the platform, WARNING from other libraries.
The handlers are installed on the root logger before Prefect is imported; Prefect's
logging set-up then keeps them instead of its own console handler
(``prefect.logging.configuration.setup_logging``), and ``PREFECT_LOGGING_LEVEL`` still sets
what Prefect's loggers emit.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

EXIT_UNEXPECTED = 1
EXIT_EXPECTED = 2  # as argparse's usage errors: the caller has something to fix
EXIT_INTERRUPTED = 130  # the shell's 128 + SIGINT

# The platform's errors that name a problem in what it was given (a spec, a dataset, a
# setting, a teams or job-variables file, a policy that refuses it); the same input fails
# the same way every time. Subclasses count (ParityError is an ExportError; LocationRefused
# and ResidencyRefused are ConfigErrors). Outages (RegistryError, DeployError,
# StorageUnavailable, ...) and integrity errors (ModelIntegrityError) are not here. Listed
# by qualified name, so that classifying an error imports nothing (torch, Feast): an error
# of a class whose module was never imported cannot have been raised.
EXPECTED_ERRORS = frozenset({
    "mlops.config.ConfigError",
    "mlops.data.loading.DataError",
    "mlops.data.encoding.EncodingError",
    "mlops.data.validation.ValidationFailed",
    "mlops.data.storage.StorageUntrusted",
    "mlops.features.store.FeatureError",
    "mlops.training.loop.TrainingError",
    "mlops.training.model.ModelError",
    "mlops.training.export.ExportError",
    "mlops.fairshare.teams.TeamsConfigError",
    "mlops.governance.identities.GovernanceError",
    "mlops.governance.approvals.ApprovalRefused",
    "mlops.serving.tls.TlsError",
    "infra.job_templates.JobVariablesError",
})

TERMINAL_FORMAT = "%(asctime)s %(name)s %(message)s"
FILE_FORMAT = "%(asctime)s %(levelname)-7s %(process)d %(name)s: %(message)s"
PLATFORM_LOGGERS = ("mlops", "flows", "tasks", "infra")
LOG_MAX_BYTES = 5_000_000
LOG_BACKUPS = 3
_ENGINE_MODULES = frozenset({"flow_engine", "task_engine"})
# The engine's last line for a run, when its state is one of Prefect's unsuccessful ones
# (TimedOut is the Failed state of a run past its timeout).
_UNFINISHED = re.compile(r"Finished in state (Failed|Crashed|Cancelled|TimedOut)\b")


def is_expected(error: BaseException) -> bool:
    """Whether the error, or one it was raised from (``raise ... from``), is expected. An
    error raised while handling an expected one (``__context__`` only) is not: that is a
    bug in the handler."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if any(_qualified(kind) in EXPECTED_ERRORS for kind in type(current).__mro__):
            return True
        seen.add(id(current))
        current = current.__cause__
    return False


def _qualified(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


def report_failure(error: BaseException, command: str, log_file: Path | None) -> int:
    """Log the failure with its traceback (file only), print one message, return the exit
    status."""
    if isinstance(error, KeyboardInterrupt):
        log.debug("mlops %s interrupted", command, exc_info=error)
        print(_with_details("interrupted", log_file), file=sys.stderr)
        return EXIT_INTERRUPTED
    expected = is_expected(error)
    log.debug("mlops %s failed (%s)", command, "expected" if expected else "unexpected",
              exc_info=error)
    text = str(error) if expected else _typed(error)
    print(_with_details(f"error: {text}", log_file), file=sys.stderr)
    return EXIT_EXPECTED if expected else EXIT_UNEXPECTED


def _typed(error: BaseException) -> str:
    """An unexpected error's type and message: ``KeyError: 'x'`` says more than ``'x'``."""
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _with_details(message: str, log_file: Path | None) -> str:
    """The message and where the traceback is: on its line, or under a multi-line one."""
    if log_file is None:
        return message
    details = f"details: {_shown(log_file)}"
    return f"{message}\n{details}" if "\n" in message else f"{message} ({details})"


def _shown(path: Path) -> str:
    """The path relative to the working directory when it lies under it, else absolute."""
    absolute = path.absolute()
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)


@contextmanager
def command_logging(command: str, data_dir: Path | None,
                    options: dict[str, object]) -> Iterator[Path | None]:
    """Route logging while one command runs: progress to stderr, everything to
    ``<data_dir>/logs/mlops-<command>.log``. Yields the file, or None when it cannot be
    opened (then the terminal alone gets the records it would have had). The command owns
    the process's logging meanwhile; the previous set-up comes back afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level,
             {name: logging.getLogger(name).level for name in PLATFORM_LOGGERS})
    for handler in saved[0]:
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)
    for name in PLATFORM_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    opened = _file_handler(command, data_dir)
    ours = [_terminal_handler(), *([opened[1]] if opened else [])]
    for handler in ours:
        root.addHandler(handler)
    log.debug("mlops %s started (pid %d): %s", command, os.getpid(), options)
    try:
        yield opened[0] if opened else None
    finally:
        for handler in ours:
            root.removeHandler(handler)
            handler.close()
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        for name, level in saved[2].items():
            logging.getLogger(name).setLevel(level)


def _terminal_handler() -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.INFO)
    handler.addFilter(WithoutEngineFailures())
    handler.setFormatter(WithoutTraceback(TERMINAL_FORMAT))
    return handler


def _file_handler(command: str, data_dir: Path | None) -> tuple[Path, logging.Handler] | None:
    if data_dir is None:
        return None
    path = Path(data_dir) / "logs" / f"mlops-{command}.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8")
    except OSError:
        return None
    handler.setFormatter(logging.Formatter(FILE_FORMAT))
    return path, handler


class WithoutEngineFailures(logging.Filter):
    """Drops the Prefect engine's reports of a run that did not complete: its errors
    ("Encountered exception during execution", "Crash detected!", each with a traceback)
    and its "Finished in state Failed(...)" line (INFO for a flow run, ERROR for a task
    run). Each repeats the error the command reports once at the end. The records of the
    flows and tasks themselves pass, errors included."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not (record.name.startswith("prefect") and record.module in _ENGINE_MODULES):
            return True
        if record.levelno >= logging.ERROR:
            return False
        return _UNFINISHED.match(record.getMessage()) is None


class WithoutTraceback(logging.Formatter):
    """The record's line without its traceback or stack (those are in the log file)."""

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.exc_text or record.stack_info:
            record = logging.makeLogRecord(
                {**record.__dict__, "exc_info": None, "exc_text": None, "stack_info": None})
        return super().format(record)
