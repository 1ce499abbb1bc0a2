"""Start-up settings of the service process: the admin token and bad flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops.serving.server import StartupError, admin_token, main

TOKEN = "a-long-enough-admin-token"


def test_admin_token_from_the_environment_or_a_file(tmp_path: Path) -> None:
    assert admin_token({}) is None
    assert admin_token({"MLOPS_ADMIN_TOKEN": f" {TOKEN}\n"}).get_secret_value() == TOKEN
    secret = tmp_path / "admin-token"
    secret.write_text(TOKEN + "\n")
    assert admin_token({"MLOPS_ADMIN_TOKEN_FILE": str(secret)}).get_secret_value() == TOKEN


@pytest.mark.parametrize("environ", [{"MLOPS_ADMIN_TOKEN": "short"},
                                     {"MLOPS_ADMIN_TOKEN_FILE": "{short}"}])
def test_a_short_token_is_refused_without_showing_it(tmp_path: Path,
                                                     environ: dict[str, str]) -> None:
    short = tmp_path / "short"
    short.write_text("short")
    environ = {key: value.format(short=short) for key, value in environ.items()}
    with pytest.raises(StartupError, match="shorter than 16 characters") as info:
        admin_token(environ)
    assert "'short'" not in str(info.value) and ": short" not in str(info.value)


def test_an_unreadable_token_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    with pytest.raises(StartupError, match=f"cannot read the admin token file {missing}"):
        admin_token({"MLOPS_ADMIN_TOKEN_FILE": str(missing)})


@pytest.mark.parametrize(("flags", "message"), [
    (["--threads", "0"], "--threads must be at least 1"),
    (["--batch-window-ms", "500"], "batch_window_ms"),
    (["--max-batch", "0"], "max_batch"),
])
def test_bad_flags_exit_2_with_one_line(tmp_path: Path, flags: list[str], message: str,
                                        caplog: pytest.LogCaptureFixture) -> None:
    assert main(["--onnx", str(tmp_path / "m.onnx"), *flags]) == 2
    assert message in caplog.text and "Traceback" not in caplog.text
