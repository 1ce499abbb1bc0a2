"""How `mlops run` fails, as a user sees it: the CLI in a fresh process on a bad spec, a
missing dataset or data that fails validation ends with one message and exit 2, no
traceback on the terminal, the traceback in the run's log file; anything else exits 1."""

from __future__ import annotations

import importlib
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import flows.cli
from flows.cli_errors import EXPECTED_ERRORS, PLATFORM_LOGGERS, is_expected
from mlops.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]
WAGE_PANEL = ROOT / "mlops" / "specs" / "wage_panel.yaml"


def _spec(tmp_path: Path, **changes: object) -> Path:
    spec = {**yaml.safe_load(WAGE_PANEL.read_text()), **changes}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _run(tmp_path: Path, spec: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLOPS_DATA_DIR": str(tmp_path / "data"),
           "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_LOGGING_LEVEL": "INFO"}
    env.pop("PREFECT_API_URL", None)  # the embedded server, as `make run` on a fresh machine
    return subprocess.run([sys.executable, "-m", "flows.cli", "run", "--spec", str(spec),
                           "--no-deploy", "--epochs", "1"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def _shown(path: Path) -> str:
    """The log file's path as the CLI names it (relative under the working directory)."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _assert_one_message(run: subprocess.CompletedProcess, tmp_path: Path, distinctive: str,
                        error: str) -> None:
    terminal = run.stdout + run.stderr
    assert run.returncode == 2, terminal[-3000:]
    assert terminal.count(distinctive) == 1, terminal[-3000:]
    assert "Traceback" not in terminal and "Finished in state Failed" not in terminal, terminal
    log_file = tmp_path / "data" / "logs" / "mlops-run.log"
    assert f"details: {_shown(log_file)}" in run.stderr
    logged = log_file.read_text()
    assert "Traceback (most recent call last)" in logged and f"{error}: " in logged


@pytest.mark.slow
def test_data_that_fails_validation_ends_with_one_message(tmp_path: Path) -> None:
    rules = yaml.safe_load(WAGE_PANEL.read_text())["rules"]
    spec = _spec(tmp_path, rules=[{"column": "exper", "min": 0, "max": 1}, *rules[1:]])
    run = _run(tmp_path, spec)
    _assert_one_message(run, tmp_path, "expect_column_values_to_be_between(column='exper'",
                        "mlops.data.validation.ValidationFailed")
    assert "Beginning flow run" in run.stderr  # the progress lines stay
    assert run.stderr.index("error: dataset 'wage_panel'") > run.stderr.index("validated")


@pytest.mark.slow
def test_a_missing_dataset_ends_with_one_message(tmp_path: Path) -> None:
    run = _run(tmp_path, _spec(tmp_path, path=str(tmp_path / "nowhere.csv")))
    _assert_one_message(run, tmp_path, "nowhere.csv: dataset file not found",
                        "mlops.data.loading.DataError")


@pytest.mark.parametrize("case", ["invalid key", "no such spec"])
def test_a_bad_spec_ends_with_one_message(tmp_path: Path, case: str) -> None:
    spec = _spec(tmp_path, bogus_key=1) if case == "invalid key" else tmp_path / "none.yaml"
    run = _run(tmp_path, spec)
    distinctive = ("bogus_key: Extra inputs are not permitted" if case == "invalid key"
                   else f"dataset spec not found: {spec}")
    _assert_one_message(run, tmp_path, distinctive, "mlops.config.ConfigError")
    assert run.stderr.startswith("error: dataset spec")


@pytest.fixture
def own_logging() -> Iterator[None]:
    """main() in this process: the root logger's set-up comes back afterwards."""
    root = logging.getLogger()
    before = (list(root.handlers), root.level,
              [logging.getLogger(name).level for name in PLATFORM_LOGGERS])
    yield
    assert (list(root.handlers), root.level,
            [logging.getLogger(name).level for name in PLATFORM_LOGGERS]) == before


def test_an_unexpected_error_exits_1_with_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
        own_logging: None) -> None:
    def broken(args: object) -> int:
        raise RuntimeError("the disk caught fire")

    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(flows.cli, "_stop", broken)
    assert flows.cli.main(["stop"]) == 1
    log_file = tmp_path / "data" / "logs" / "mlops-stop.log"
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"error: RuntimeError: the disk caught fire (details: {_shown(log_file)})"]
    logged = log_file.read_text()
    assert "Traceback (most recent call last)" in logged
    assert "RuntimeError: the disk caught fire" in logged


def test_an_interrupt_exits_130_with_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
        own_logging: None) -> None:
    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(flows.cli, "_stop", interrupted)
    assert flows.cli.main(["stop"]) == 130
    log_file = tmp_path / "data" / "logs" / "mlops-stop.log"
    assert capsys.readouterr().err.splitlines() == [
        f"interrupted (details: {_shown(log_file)})"]
    assert "KeyboardInterrupt" in log_file.read_text()


def test_bad_run_options_are_an_expected_failure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
        own_logging: None) -> None:
    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path / "data"))
    assert flows.cli.main(["run", "--spec", str(WAGE_PANEL), "--team", "Not A Team"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: invalid run options: --team: String should match pattern")
    assert len(err.splitlines()) == 1


def test_an_error_raised_from_an_expected_one_is_expected() -> None:
    class Refused(ConfigError):
        pass

    assert is_expected(Refused("a subclass counts"))
    try:
        raise RuntimeError("wrapped") from ConfigError("bad spec")
    except RuntimeError as wrapped:
        assert is_expected(wrapped)
    try:
        try:
            raise ConfigError("bad spec")
        except ConfigError:
            raise KeyError("a bug in the handler") from None
    except KeyError as bug:
        assert bug.__context__ is not None and not is_expected(bug)
    assert not is_expected(ValueError("not one of the platform's"))


@pytest.mark.parametrize("name", sorted(EXPECTED_ERRORS))
def test_each_expected_error_names_an_exception_class(name: str) -> None:
    module, _, qualname = name.rpartition(".")
    kind = getattr(importlib.import_module(module), qualname)
    assert issubclass(kind, Exception) and f"{kind.__module__}.{kind.__qualname__}" == name
