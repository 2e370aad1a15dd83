"""Bad arguments and an unusable environment stop `recloop run` before any work: one line on
stderr naming the argument (or variable) and the rule, exit status 2 (4 for a store that does
not answer), and nothing created. Driven through the real entry point `flows.cli.main`."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from flows.cli import main


def _run(capsys, *argv: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    out = capsys.readouterr()
    return info.value.code, out.err.strip()


@pytest.mark.parametrize(("argv", "fragments"), [
    (["run", "--date", "2026-13-45"], ["--date '2026-13-45'", "YYYY-MM-DD", "month must be in 1..12"]),
    (["run", "--date", "2026-01-10", "--epochs", "0"], ["--epochs 0", "at least 1"]),
    (["run", "--date", "2026-01-10", "--epochs", "many"], ["--epochs", "valid integer"]),
    (["run", "--date", "2026-01-10", "--approval", "sometimes"], ["--approval 'sometimes'", "auto or manual"]),
    (["run", "--date", "2026-01-10", "--warm-start", "on"], ["--warm-start 'on'", "auto or off"]),
    (["run"], ["Missing option '--date'"]),
    (["run", "--date", "2026-01-10", "--bogus"], ["No such option: --bogus"]),
])
def test_bad_arguments_are_one_line_and_exit_2(capsys, recloop_home, argv, fragments):
    code, err = _run(capsys, *argv)
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    for fragment in fragments:
        assert fragment in err, err
    assert not recloop_home.exists()  # nothing was created


def test_json_into_a_missing_folder_is_refused_before_work(capsys, recloop_home, tmp_path):
    code, err = _run(capsys, "run", "--date", "2026-01-10", "--json", str(tmp_path / "nope" / "out.json"))
    assert code == 2 and "--json" in err and "does not exist" in err, err
    assert not (recloop_home / "mlflow.db").exists()


def test_recloop_home_under_a_regular_file(capsys, recloop_home, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("RECLOOP_HOME", str(blocker / "home"))
    code, err = _run(capsys, "run", "--date", "2026-01-10")
    assert code == 2 and err == f"error: RECLOOP_HOME={blocker / 'home'}: not usable, {blocker} is a file, not a directory"


def test_a_read_only_recloop_home(capsys, recloop_home, tmp_path, monkeypatch):
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    if os.access(read_only, os.W_OK):  # root ignores the mode: use a read-only filesystem's directory
        read_only = Path("/sys/kernel")
    monkeypatch.setenv("RECLOOP_HOME", str(read_only))
    code, err = _run(capsys, "run", "--date", "2026-01-10")
    assert code == 2 and f"RECLOOP_HOME={read_only}: not writable" in err, err


def test_a_bad_setting_names_the_variable(capsys, recloop_home, monkeypatch):
    monkeypatch.setenv("RECLOOP_TRAIN_EPOCHS", "0")
    code, err = _run(capsys, "run", "--date", "2026-01-10")
    assert code == 2 and err.startswith("error: RECLOOP_TRAIN_EPOCHS='0': ") and "epochs >= 1" in err, err


def test_a_bad_warm_start_setting_names_the_variable_and_the_choices(capsys, recloop_home, monkeypatch):
    monkeypatch.setenv("RECLOOP_WARM_START", "yes")
    code, err = _run(capsys, "run", "--date", "2026-01-10")
    assert code == 2 and err == "error: RECLOOP_WARM_START='yes': Input should be 'auto' or 'off'", err


def test_a_setting_of_the_old_flat_name_is_refused_with_its_new_name(capsys, recloop_home, monkeypatch):
    monkeypatch.setenv("RECLOOP_MIN_AUC", "0.7")
    code, err = _run(capsys, "run", "--date", "2026-01-10")
    assert code == 2 and err.strip() == "error: RECLOOP_MIN_AUC: renamed to RECLOOP_GATE_MIN_AUC", err


def test_settings_sections_read_their_variables_and_keep_one_default(recloop_home, monkeypatch):
    from models.trainer import TrainConfig
    from tasks.evaluate import GatePolicy
    from tasks.settings import get_settings

    assert get_settings().train == TrainConfig() and get_settings().gate == GatePolicy()
    monkeypatch.setenv("RECLOOP_TRAIN_LR", "0.01")
    monkeypatch.setenv("RECLOOP_TRAIN_PATIENCE", "1")
    monkeypatch.setenv("RECLOOP_GATE_CALIBRATION_BOUNDS", "[0.5, 2.0]")
    settings = get_settings(train={"epochs": 2, "batch_size": None})
    assert (settings.train.lr, settings.train.patience, settings.train.epochs) == (0.01, 1, 2)
    assert settings.train.batch_size == TrainConfig().batch_size
    assert settings.gate.calibration_bounds == (0.5, 2.0)


def test_a_dead_tracking_server_is_one_line_in_seconds(capsys, recloop_home, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("RECLOOP_TRACKING_URI", f"http://127.0.0.1:{port}")
    code, err = _run(capsys, "run", "--date", "2026-01-10")
    assert code == 4, err
    assert len(err.splitlines()) == 1 and f"RECLOOP_TRACKING_URI=http://127.0.0.1:{port}: no answer" in err, err


def test_a_night_without_a_date_is_the_scheduled_day_in_the_schedules_time_zone():
    from datetime import UTC, date, datetime

    from flows.nightly import night_date

    # 00:30 in Berlin is 23:30 UTC the day before: the night belongs to the Berlin date.
    start = datetime(2026, 3, 9, 23, 30, tzinfo=UTC)
    assert night_date(start, "Europe/Berlin") == date(2026, 3, 10)
    assert night_date(start, "UTC") == date(2026, 3, 9)
    assert night_date(start, "America/New_York") == date(2026, 3, 9)
