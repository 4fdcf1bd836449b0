"""Our pure-Python rpmvercmp against the real one (python3-rpm, Debian's interpreter)."""
from __future__ import annotations

import json
import random
import shutil
import subprocess

import pytest

from ramdisk_agent.wire.rpmver import label_compare, split_evr, vercmp

SYSTEM_PYTHON = "/usr/bin/python3"
PARTS = ["1", "2", "10", "01", "a", "b", "rc1", "~rc1", "~", "^post", "^", "0", "9",
         "alpha", "beta", ".", "_", "+", "-"]


def _cases() -> list[tuple[str, str]]:
    rng = random.Random(11)
    cases = {("1.0~rc1", "1.0"), ("1.0^git1", "1.0.1"), ("5.5p1", "5.5p10"),
             ("1.0a", "1.0.a"), ("10xyz", "10.1xyz"), ("2.0", "2.0")}
    while len(cases) < 2000:
        cases.add(tuple("".join(rng.choice(PARTS) for _ in range(rng.randint(1, 4)))
                        for _ in range(2)))
    return sorted(cases)


def test_vercmp_agrees_with_rpm_labelcompare():
    if shutil.which(SYSTEM_PYTHON) is None:
        pytest.fail("Debian's python3 is missing")
    cases = _cases()
    script = ("import json, sys, rpm\n"
              "cases = json.load(sys.stdin)\n"
              "print(json.dumps([rpm.labelCompare(('0', a, '1'), ('0', b, '1')) "
              "for a, b in cases]))\n")
    proc = subprocess.run([SYSTEM_PYTHON, "-c", script], input=json.dumps(cases),
                          capture_output=True, text=True, timeout=60)
    if "No module named 'rpm'" in proc.stderr:
        pytest.fail("python3-rpm is not installed (run scripts/install-system-packages)")
    expected = json.loads(proc.stdout)
    wrong = [(a, b, want, vercmp(a, b)) for (a, b), want in zip(cases, expected)
             if vercmp(a, b) != want]
    assert not wrong, wrong[:10]


def test_label_compare_uses_epoch_first():
    assert label_compare(("1", "1.0", "1"), ("0", "9.0", "1")) == 1
    assert label_compare(split_evr("2.0-3"), split_evr("2.0-10")) == -1
    assert split_evr("1:2.0-3") == ("1", "2.0", "3")
