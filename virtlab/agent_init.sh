#!/usr/bin/busybox sh
# /init of the QEMU lab's deploy ramdisk (virtlab/agent_initramfs.py packs it with
# Debian's python3.11, the real metalcast-agent, busybox and the virtio modules).
# It does what a ramdisk's init does before the agent can run: mount the kernel
# file systems, load the NIC and disk drivers, take a DHCP lease on the boot NIC,
# then start `metalcast-agent --power-action system`, which reads ipa-api-url= and
# BOOTIF= from /proc/cmdline and ends with `poweroff -f` when the conductor asks.
# Lines the lab parses start with "METALCAST-RAMDISK".
/usr/bin/busybox mkdir -p /proc /sys /dev /tmp /run
/usr/bin/busybox --install -s
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null

say() { echo "METALCAST-RAMDISK $* uptime=$(cut -d' ' -f1 /proc/uptime)"; }
die() { say "error $*"; poweroff -f; }

say "init"
for module in @MODULES@; do
    insmod "/lib/modules/$module.ko" || die "insmod $module failed"
done
say "disks $(ls /sys/block | tr '\n' ' ')"

bootif=""
for arg in $(cat /proc/cmdline); do
    case "$arg" in BOOTIF=*) bootif="${arg#BOOTIF=}" ;; esac
done
# BOOTIF is "01-aa-bb-cc-dd-ee-ff" (01 = Ethernet) or a plain MAC.
mac=$(echo "$bootif" | tr 'A-F-' 'a-f:' | sed -e 's/^01:\(..:..:..:..:..:..\)$/\1/')
iface=""
for dev in /sys/class/net/*; do
    name="${dev##*/}"
    [ "$name" = lo ] && continue
    if [ -z "$mac" ] || [ "$(cat "$dev/address")" = "$mac" ]; then
        iface="$name"
        break
    fi
done
[ -n "$iface" ] || die "no network interface with MAC ${mac:-any}"
ip link set lo up
ip link set "$iface" up
udhcpc -i "$iface" -n -q -t 10 -T 1 -s /etc/udhcpc.script >/dev/null 2>&1 \
    || die "udhcpc got no lease on $iface"
say "dhcp iface=$iface ip=$(cat /tmp/lease-ip)"

export PYTHONPATH=@AGENT_ROOT@ PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
say "agent starting"
python3 -m ramdisk_agent.cli --power-action system
say "agent exited status=$?"
poweroff -f
