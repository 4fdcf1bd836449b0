"""Real RPMs for the patching tests, built with ``rpmbuild`` (Debian's rpm package).

Each package is noarch with one file under /usr/share/<name>/ and optional
scriptlets; ``AutoReqProv: no`` keeps an empty install root installable
(test-lab.md §6: scriptlets otherwise require /bin/sh).
"""
from __future__ import annotations

import subprocess
from pathlib import Path

from tests.functional.tools import require

SPEC = """Name: {name}
Version: {version}
Release: {release}
Summary: metalcast test package {name}
License: MIT
BuildArch: noarch
AutoReqProv: no
{extra_tags}
%description
Test package {name} {version}-{release}.
%install
mkdir -p %{{buildroot}}/usr/share/{name}
echo "{name} {version}-{release}" > %{{buildroot}}/usr/share/{name}/version
{install}
%files
/usr/share/{name}
{files}
{scripts}
"""


def build_rpm(workdir: Path, name: str, version: str = "1.0", release: str = "1",
              scripts: str = "", extra_tags: str = "", install: str = "",
              files: str = "") -> Path:
    """Build ``name-version-release.noarch.rpm`` and return its path."""
    rpmbuild = require("rpmbuild")
    topdir = Path(workdir).resolve() / "rpmbuild"
    spec = topdir / "SPECS" / f"{name}-{version}-{release}.spec"
    spec.parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(SPEC.format(name=name, version=version, release=release,
                                scripts=scripts, extra_tags=extra_tags, install=install,
                                files=files))
    subprocess.run([rpmbuild, "-bb", "--quiet", "--define", f"_topdir {topdir}",
                    "--define", "__strip /bin/true", "--define", "_build_id_links none",
                    str(spec)], check=True, capture_output=True, timeout=120)
    path = topdir / "RPMS" / "noarch" / f"{name}-{version}-{release}.noarch.rpm"
    assert path.exists(), f"rpmbuild did not produce {path}"
    return path
