#!/usr/bin/busybox sh
# /init of the QEMU A/B lab VM (virtlab/ab_vm.py lays it over the agent ramdisk of
# virtlab/agent_initramfs.py: Debian's python3.11, the real metalcast-agent, busybox).
# Every boot, including every guest `reboot -f` (QEMU restarts the same VM):
#  1. the chooser: GRUB gptprio's rule on /dev/vda's GPT bits (ramdisk_agent.host.slots
#     SlotDisk.boot_next: the highest priority that is successful or has tries left,
#     one try consumed and written to both GPT copies before the slot is used);
#  2. that slot's ext4 is mounted read-only at /sysroot: its /etc/os-release is the
#     running version; the state partition (/dev/vda1, ext4) holds update.conf, the
#     update key, the machine id and the engine's state across reboots;
#  3. `metalcast-agent update mark-good`: the health checks within the window; when
#     they fail the boot is not marked and this init reboots (a watchdog's job), so the
#     next boot's chooser falls back;
#  4. `metalcast-agent update daemon`: checks the appliance's Omaha endpoint, installs
#     into the passive slot and reboots with REBOOT_COMMAND when an update is in.
# Lines the test parses start with "METALCAST-AB".
/usr/bin/busybox mkdir -p /proc /sys /dev /tmp /run /state /sysroot
/usr/bin/busybox --install -s
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null

say() { echo "METALCAST-AB $* uptime=$(cut -d' ' -f1 /proc/uptime)"; }
die() { say "error $*"; poweroff -f; }

say "init"
for module in @MODULES@; do
    insmod "/lib/modules/$module.ko" || die "insmod $module failed"
done
[ -b /dev/vda1 ] || die "no /dev/vda1 (disks: $(ls /sys/block | tr '\n' ' '))"
mount -t ext4 /dev/vda1 /state || die "cannot mount the state partition /dev/vda1"

export PYTHONPATH=@AGENT_ROOT@ PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
mkdir -p /run/metalcast
python3 - <<'EOF' || die "the slot chooser failed"
from ramdisk_agent.host.slots import SlotDisk
disk = SlotDisk("/dev/vda")
choice = disk.boot_next()
if choice is None:
    print("METALCAST-AB chooser: no bootable slot", flush=True)
    raise SystemExit(1)
guid = next(s.guid for s in disk.slots() if s.number == choice.number).lower()
b, a = choice.before, choice.after
print(f"METALCAST-AB chose partition={choice.number} partuuid={guid} priority={b.priority} "
      f"tries={b.tries}->{a.tries} successful={int(b.successful)}", flush=True)
with open("/run/metalcast/cmdline", "w") as out:
    out.write(f"mount.usr=PARTUUID={guid}\n")
with open("/run/metalcast/partition", "w") as out:
    out.write(f"{choice.number}\n")
EOF
part=$(cat /run/metalcast/partition)
mount -t ext4 -o ro "/dev/vda$part" /sysroot || die "cannot mount slot /dev/vda$part"
version=$(. /sysroot/etc/os-release; echo "$VERSION")
say "running version=$version partition=$part"

ip link set lo up
ip addr add @GUEST_ADDRESS@ dev eth0 || die "no eth0"
ip link set eth0 up

agent() { python3 -m ramdisk_agent.cli update "$@" --config /state/update.conf; }
if agent mark-good; then
    say "marked good version=$version partition=$part"
else
    say "not marked good version=$version partition=$part: rebooting"
    umount /state
    reboot -f
fi
say "daemon starting"
agent daemon
say "daemon exited status=$?"
