"""``metalcast-agent host --update-config FILE``: the update engine's daemon starts only
with a SERVER, and a bad file stops the agent with the reason (exit 2)."""
from __future__ import annotations

import threading

import pytest

from ramdisk_agent import hostmode


def test_no_server_no_daemon(tmp_path):
    conf = tmp_path / "update.conf"
    conf.write_text("SERVER=disabled\nGROUP=stable\n")
    hostmode._start_image_updates(str(conf), threading.Event())   # no thread: the tier guard


@pytest.mark.parametrize("text,reason", [("SERVR=x\n", "unknown update.conf key"),
                                         ("REBOOT_STRATEGY=now\n", "REBOOT_STRATEGY")])
def test_a_bad_update_conf_is_a_usage_error(tmp_path, capsys, text, reason):
    conf = tmp_path / "update.conf"
    conf.write_text(text)
    with pytest.raises(SystemExit) as exit_:
        hostmode._start_image_updates(str(conf), threading.Event())
    assert exit_.value.code == 2 and reason in capsys.readouterr().err


def test_a_missing_update_conf_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        hostmode._start_image_updates(str(tmp_path / "nope.conf"), threading.Event())
    assert "does not exist" in capsys.readouterr().err


def test_a_server_without_slots_says_what_to_set(tmp_path, capsys):
    conf = tmp_path / "update.conf"
    conf.write_text(f"SERVER=http://appliance/v1/update/\nVERSION=1\n"
                    f"BOOT_ID_FILE={tmp_path}/boot_id\nCMDLINE_FILE={tmp_path}/cmdline\n")
    (tmp_path / "boot_id").write_text("b\n")
    (tmp_path / "cmdline").write_text("console=ttyS0\n")
    with pytest.raises(SystemExit):
        hostmode._start_image_updates(str(conf), threading.Event())
    assert "set DISK= and ACTIVE_SLOT=" in capsys.readouterr().err
