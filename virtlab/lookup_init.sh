#!/bin/sh
# /init of the PXE lab's test initramfs (virtlab/initramfs.py packs it with a static
# busybox and the virtio-net modules). It proves a network boot reached user space:
# load the NIC driver, get a DHCP lease, then ask the appliance that booted us
# "who am I" with GET <ipa-api-url>/v1/lookup?addresses=<MAC>, print one marker line
# with the HTTP status on the serial console, and power off (QEMU runs -no-reboot).
# Every line the lab parses starts with "METALCAST-GUEST".
/bin/busybox mkdir -p /proc /sys /dev /tmp /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null

say() { echo "METALCAST-GUEST $* uptime=$(cut -d' ' -f1 /proc/uptime)"; }
die() { say "error $*"; poweroff -f; }

say "init"
for module in @MODULES@; do
    insmod "/lib/modules/$module.ko" || die "insmod $module failed"
done

api=""
bootif=""
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        ipa-api-url=*) api="${arg#ipa-api-url=}" ;;
        BOOTIF=*) bootif="${arg#BOOTIF=}" ;;
    esac
done
[ -n "$api" ] || die "no ipa-api-url= on the kernel command line"

# BOOTIF is "01-aa-bb-cc-dd-ee-ff" (PXE/iPXE, 01 = Ethernet) or a plain MAC.
mac=$(echo "$bootif" | tr 'A-F-' 'a-f:' | sed -e 's/^01:\(..:..:..:..:..:..\)$/\1/')
iface=""
for dev in /sys/class/net/*; do
    name="${dev##*/}"
    [ "$name" = lo ] && continue
    address=$(cat "$dev/address")
    if [ -z "$mac" ] || [ "$address" = "$mac" ]; then
        iface="$name"
        mac="$address"
        break
    fi
done
[ -n "$iface" ] || die "no network interface with MAC ${mac:-any}"
say "nic iface=$iface mac=$mac"

ip link set "$iface" up
udhcpc -i "$iface" -n -q -t 10 -T 1 -s /etc/udhcpc.script >/dev/null 2>&1 \
    || die "udhcpc got no lease on $iface"
say "dhcp ip=$(cat /tmp/lease-ip)"

url="$api/v1/lookup?addresses=$mac"
say "lookup url=$url"
wget -S -O /tmp/lookup.json --header "X-OpenStack-Ironic-API-Version: 1.62" "$url" \
    2>/tmp/wget.err
status=$(sed -n 's/^ *HTTP\/1\.[01] \([0-9][0-9]*\).*/\1/p' /tmp/wget.err | tail -n 1)
say "lookup status=${status:-none} mac=$mac"
# The answer carries the agent token: print which node it names and whether a token
# came, never the token itself (the console ends up in test logs).
if [ -s /tmp/lookup.json ]; then
    node=$(grep -o '"uuid": *"[0-9a-f-]*"' /tmp/lookup.json | head -n 1 \
        | sed 's/.*"\([0-9a-f-]*\)"$/\1/')
    token=no
    grep -q '"agent_token": *"[^"*]' /tmp/lookup.json && token=yes
    say "lookup node=${node:-none} agent_token=$token"
fi
[ -n "$status" ] || sed -e 's/^/METALCAST-GUEST wget: /' /tmp/wget.err
poweroff -f
