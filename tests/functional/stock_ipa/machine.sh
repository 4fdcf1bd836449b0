#!/bin/sh
# Boot the test machine of a stock ironic-python-agent (test_stock_ipa.py). Run as:
#   ip netns exec NS unshare --mount --pid --fork --kill-child --mount-proc \
#       --propagation private machine.sh DISK POWER_LOG CMD...
# The network namespace gives the machine its one NIC, the PID namespace its own
# /proc (IPA's fuser looks for processes holding the disk: only the machine's are
# there). This script is the machine's init: it runs CMD (the agent) and ends with
# it, which ends every process of the machine.
#
# What keeps IPA's hands off the host, set up in this mount namespace only:
# * /dev is a fresh tmpfs with the basic character devices and DISK (a loop device):
#   IPA cannot open, let alone write, any disk of the host;
# * /proc/sysrq-trigger is POWER_LOG: when `poweroff`/`reboot` fail, IPA writes "o"
#   or "b" there to power the machine off, which would stop the host;
# * /sys/firmware is empty: no EFI variables, no DMI tables to change;
# * /run is private (IPA keeps its TLS key and udev looks there).
# `poweroff`, `reboot` and `hwclock` are the shims in bin/, first on PATH.
set -eu
disk=$1
power_log=$2
shift 2
case $disk in
    /dev/loop[0-9]*) ;;
    *) echo "machine.sh: $disk is not a loop device" >&2; exit 2;;
esac
[ -b "$disk" ] || { echo "machine.sh: $disk is not a block device" >&2; exit 2; }
major=$((0x$(stat -c %t "$disk")))
minor=$((0x$(stat -c %T "$disk")))
touch "$power_log"
if [ -e /proc/sysrq-trigger ]; then   # absent when the kernel has no magic SysRq
    mount --bind "$power_log" /proc/sysrq-trigger
fi
mount -t tmpfs -o mode=0755,size=64k,nosuid,nodev,noexec metalcast-machine-fw /sys/firmware
mount -t tmpfs -o mode=0755,size=1m,nosuid,noexec metalcast-machine-dev /dev
mknod -m 666 /dev/null c 1 3
mknod -m 666 /dev/zero c 1 5
mknod -m 666 /dev/full c 1 7
mknod -m 666 /dev/random c 1 8
mknod -m 666 /dev/urandom c 1 9
ln -s /proc/self/fd /dev/fd
mkdir /dev/shm   # POSIX semaphores: IPA's erase_devices runs a process pool
mount -t tmpfs -o mode=1777,size=4m,nosuid,nodev,noexec metalcast-machine-shm /dev/shm
mknod -m 660 "$disk" b "$major" "$minor"
mount -t tmpfs -o mode=0755,size=4m,nosuid,nodev metalcast-machine-run /run
"$@" &
agent=$!
# The power button (bin/poweroff) and the test's stop both send TERM to this init.
trap 'kill -TERM "$agent" 2>/dev/null || true' TERM INT HUP
status=0
while kill -0 "$agent" 2>/dev/null; do
    wait "$agent" || status=$?
done
exit "$status"
