#!/bin/busybox sh
# Standby's test guest: PID 1 of a busybox initramfs (standby-guest).
#
# It loads the kernel modules listed in /etc/standby-modules (virtio and
# ext4), mounts the ext4 filesystem on its disk (/dev/vda) and runs the workload: each
# step writes one sequence-numbered record to the raw record area at the end
# of the disk and one file /data/<seq> to the filesystem, makes both durable
# (sync), and only then prints "standby-guest: record <seq>" on the console.
# A printed record is an acknowledged write: it must survive every planned
# move. The sequence resumes after the highest record on the disk, so a
# copy booted elsewhere carries on where its disk left off.
#
# Kernel command line: standby.count=N (steps, 0 = until powered down),
# standby.interval=SECONDS (pause between steps), standby.file_kib=K,
# standby.agent=0 (do not start qemu-guest-agent even when the initramfs
# carries it), standby.disk=/dev/vdX (the workload's disk, default /dev/vda:
# another when the first disk is the one the machine boots from). With the agent, the host can freeze the filesystem
# (guest-fsfreeze-freeze) for an app-consistent point.
# Each NIC present is brought up and announces itself with a DHCP discover
# every second (busybox udhcpc; nothing answers on Standby's test
# networks), so a host can see which network the guest is plugged into.
# busybox httpd answers on port 80 (a plan's TCP health probe). A NoCloud
# seed disk's network-config is printed as "standby-guest: seed: LINE".
# An ACPI power-button press (QEMU's system_powerdown) ends the workload,
# unmounts the filesystem and powers off.

/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /tmp /mnt

say() { echo "standby-guest: $*"; }

while read -r module; do
  insmod "/lib/modules/$module.ko" || say "warning: module $module did not load"
done < /etc/standby-modules

count=0
interval=0.2
file_kib=16
agent=1
disk=/dev/vda
for word in $(cat /proc/cmdline); do
  case "$word" in
    standby.count=*) count=${word#*=} ;;
    standby.interval=*) interval=${word#*=} ;;
    standby.file_kib=*) file_kib=${word#*=} ;;
    standby.agent=*) agent=${word#*=} ;;
    standby.disk=*) disk=${word#*=} ;;
  esac
done

# The power button (QEMU system_powerdown) asks the workload to stop.
mkdir -p /etc/acpi/PWRF /var/log /var/run
printf '#!/bin/sh\ntouch /tmp/stop\n' > /etc/acpi/PWRF/00000080
chmod +x /etc/acpi/PWRF/00000080
# acpid opens the event devices present when it starts: wait for devtmpfs
# to make one per input device (the power button's among them).
n=0
while [ "$(ls /dev/input/event* 2>/dev/null | wc -l)" -lt "$(ls -d /sys/class/input/input* 2>/dev/null | wc -l)" ] \
  && [ $n -lt 50 ]; do
  sleep 0.1
  n=$((n + 1))
done
acpid -c /etc/acpi -l /tmp/acpid.log -p /tmp/acpid.pid || say "warning: acpid did not start; power-down will be forced"

n=0
while [ ! -b $disk ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
if [ ! -b $disk ]; then
  say "error: no disk at $disk"
  poweroff -f
fi

slots=@RECORD_SLOTS@
area=$(( $(blockdev --getsize64 $disk) / 512 - slots ))
if ! mount -t ext4 $disk /mnt; then
  say "error: cannot mount the ext4 filesystem on $disk"
  poweroff -f
fi
mkdir -p /mnt/data

# qemu-guest-agent on its virtio-serial port, when carried and wanted.
# (Virtio device id 3 is the console device its port hangs off.)
if [ "$agent" != 0 ] && [ -x /usr/sbin/qemu-ga ] \
  && grep -qx 0x0003 /sys/bus/virtio/devices/*/device 2>/dev/null; then
  port=
  n=0
  while [ -z "$port" ] && [ $n -lt 30 ]; do
    for p in /sys/class/virtio-ports/*; do
      [ "$(cat "$p/name" 2>/dev/null)" = org.qemu.guest_agent.0 ] && port=/dev/${p##*/}
    done
    [ -z "$port" ] && sleep 0.1
    n=$((n + 1))
  done
  if [ -n "$port" ] && /usr/sbin/qemu-ga -m virtio-serial -p "$port" -d -f /tmp/qemu-ga.pid; then
    say "guest agent running"
  else
    say "warning: qemu-guest-agent did not start"
  fi
fi

for nic in /sys/class/net/eth*; do
  [ -e "$nic" ] || continue
  nic=${nic##*/}
  if ip link set "$nic" up; then
    say "network $nic up, mac $(cat /sys/class/net/$nic/address)"
    udhcpc -i "$nic" -f -n -t 1000000 -T 1 -A 1 -s /bin/true >/dev/null 2>&1 &
  else
    say "warning: network $nic did not come up"
  fi
done

# The guest has no cloud-init: the network-config of a NoCloud seed disk
# (FAT, after the machine's own disks) is shown on the console instead.
mkdir -p /seed
for seed in /dev/vd[b-z]; do
  [ -b "$seed" ] || continue
  if mount -t vfat -o ro "$seed" /seed 2>/dev/null; then
    [ -f /seed/network-config ] && sed 's/^/standby-guest: seed: /' /seed/network-config
    umount /seed
  fi
done

# A web server on port 80 of every address the guest gets (a health
# probe's TCP port; Standby's static addresses are set by the host through
# the agent).
mkdir -p /tmp/www
echo "standby-guest" > /tmp/www/index.html
httpd -p 80 -h /tmp/www || say "warning: httpd did not start"

last=$(dd if=$disk bs=512 skip=$area count=$slots 2>/dev/null | tr '\0' '\n' \
  | grep -a '^standby-record [0-9]*$' | cut -d' ' -f2 | sort -n | tail -n 1)
seq=$(( ${last:-0} + 1 ))
say "ready, next record $seq"

steps=0
# The file first, durable, then its record: a copy taken at any moment
# (crash-consistent) that has a record has its file too. (The other way
# round, a copy taken between the two had record N without file N, and a
# guest booted from it went on at N+1, leaving a hole behind.)
while [ ! -e /tmp/stop ] && { [ "$count" = 0 ] || [ $steps -lt "$count" ]; }; do
  yes "standby-file $seq" | head -c $((file_kib * 1024)) > /mnt/data/$seq
  sync
  printf 'standby-record %d\n' $seq \
    | dd of=$disk bs=512 seek=$((area + seq % slots)) conv=notrunc,sync 2>/dev/null
  sync
  say "record $seq"
  seq=$((seq + 1))
  steps=$((steps + 1))
  sleep "$interval"
done

sync
umount /mnt
say "stopped cleanly after record $((seq - 1))"
poweroff -f
