"""How long a virtual lab machine's firmware takes to boot, next to stock clients.

Two stages of virtlab.firmware, each against a reference measured in the same run:

* ``pxe``: loader (undionly.kpxe) + ``boot.ipxe`` over TFTP, the node's iPXE
  script over HTTP, kernel and initrd over HTTP, from a real ``metalcast serve``
  (its own TFTP and HTTP boot servers on loopback; the per-MAC script rendered by
  conductor.netboot.render into its HTTP root). Reference: ``curl`` fetching the
  same five files (tftp:// and http://) one after the other.
* ``disk``: find the OS on a GPT + ext4 image (virtlab.disk.find_os: partition
  table, superblock, ``debugfs`` cat of os-release). Reference: the bare
  ``debugfs -R 'cat /etc/os-release'`` at the known offset.

Usage: .venv/bin/python bench/virtlab_boot.py [--runs 10] [--kernel-mib 8] [--initrd-mib 32]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._server import ServeProcess
from conductor.netboot import render
from virtlab import disk, firmware, images

MAC = "52:54:00:be:0c:01"
TFTP_RE = re.compile(r"metalcast TFTP boot server on tftp://(\S+?)/ ")
HTTP_RE = re.compile(r"metalcast HTTP boot server on (http://\S+?)/ ")


def timed(func, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return times


def row(name: str, ours: list[float], reference: list[float]) -> str:
    mine, ref = statistics.median(ours), statistics.median(reference)
    return f"{name:6} {mine * 1000:10.1f} {ref * 1000:14.1f} {mine / ref:8.2f}x"


def start_server(data_dir: Path) -> tuple[ServeProcess, str, str]:
    os.environ.update(METALCAST_PXE_ENABLED="true", METALCAST_PXE_TFTP_PORT="0",
                      METALCAST_PXE_HTTP_PORT="0")
    server = ServeProcess(data_dir)
    server.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = "".join(server.output)
        tftp, http = TFTP_RE.search(text), HTTP_RE.search(text)
        if tftp and http:
            return server, tftp.group(1), http.group(1)
        time.sleep(0.1)
    server.stop()
    raise RuntimeError("no boot server lines in the output:\n" + "".join(server.output))


def write_node_script(data_dir: Path, http: str, kernel_mib: int, initrd_mib: int) -> None:
    root = data_dir / "httpboot"
    (root / "agent").mkdir(parents=True, exist_ok=True)
    (root / "agent" / "vmlinuz").write_bytes(os.urandom(kernel_mib << 20))
    (root / "agent" / "initramfs").write_bytes(os.urandom(initrd_mib << 20))
    renderer = render.Renderer(data_dir / "tftpboot", root, http)
    renderer.write(render.NodeBoot(
        "00000000-0000-0000-0000-00000000be0c", "bench", (MAC,), "ipxe",
        render.Checked(f"{http}/agent/vmlinuz"), render.Checked(f"{http}/agent/initramfs"),
        (render.Checked("ipa-api-url=http://127.0.0.1:6385"),)))


def curl_all(urls: list[str]) -> None:
    for url in urls:
        subprocess.run(["curl", "--noproxy", "*", "-sSf", "-o", "/dev/null", url], check=True)


def bench_pxe(tmp: Path, runs: int, kernel_mib: int, initrd_mib: int) -> str:
    server, tftp, http = start_server(tmp / "serve")
    try:
        write_node_script(tmp / "serve", http, kernel_mib, initrd_mib)
        pxe = firmware.PxeConfig(tftp=tftp)
        result = firmware.boot("pxe", MAC, str(tmp / "none.img"), pxe)
        assert result.kind == "agent", result
        urls = [f"tftp://{tftp}/undionly.kpxe", f"tftp://{tftp}/boot.ipxe",
                f"{http}/ipxe/{MAC.replace(':', '-')}.ipxe", f"{http}/agent/vmlinuz",
                f"{http}/agent/initramfs"]
        ours = timed(lambda: firmware.boot("pxe", MAC, str(tmp / "none.img"), pxe), runs)
        reference = timed(lambda: curl_all(urls), runs)
    finally:
        server.stop()
    return row("pxe", ours, reference)


def bench_disk(tmp: Path, runs: int) -> str:
    image = images.build_image(tmp / "v1.img", "1", 64)
    found = disk.find_os(str(image))
    assert found and found.os_release["VERSION_ID"] == "1"
    debugfs = shutil.which("debugfs") or "/usr/sbin/debugfs"
    cmd = [debugfs, "-R", "cat /etc/os-release", f"{image}?offset={found.offset}"]
    ours = timed(lambda: disk.find_os(str(image)), runs)
    reference = timed(lambda: subprocess.run(cmd, capture_output=True, check=True), runs)
    return row("disk", ours, reference)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--kernel-mib", type=int, default=8)
    parser.add_argument("--initrd-mib", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-virtlab-") as tmp:
        lines = [bench_disk(Path(tmp), args.runs),
                 bench_pxe(Path(tmp), args.runs, args.kernel_mib, args.initrd_mib)]
    print(f"virtlab firmware, median of {args.runs} runs (kernel {args.kernel_mib} MiB, "
          f"initrd {args.initrd_mib} MiB)")
    print(f"{'stage':6} {'virtlab ms':>10} {'reference ms':>14} {'ratio':>9}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
