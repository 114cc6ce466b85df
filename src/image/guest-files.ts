/**
 * The files of the guest's system that Palisade writes itself: `/init` and what it reads.
 * Pure text; `docs/design/guest-image.md` states the contract they implement (mounts,
 * modules, network, the `PALISADE-READY` marker, a job-control shell on the console,
 * `poweroff`/`reboot`/ACPI power button).
 */

/** The line `/init` prints on the console when the guest is ready for input. */
export const READY_MARKER = "PALISADE-READY";

/** The shell prompt on the console. */
export const SHELL_PROMPT = "# ";

/**
 * The kernel arguments the default guest is booted with (`npm start`, the tests, the
 * benchmarks), after the engine's own. `quiet`: the boot log is not worth its serial
 * traps. `cryptomgr.notests`: Debian's kernel self-tests every crypto algorithm at boot,
 * ~0.4 s of emulated CPU under TCG (measured with initcall_debug: crypto_algapi_init);
 * those tests catch kernel bugs, not attacks, and a guest needing them (FIPS) can say so.
 * `initcall_blacklist`: the two slowest initcalls left (initcall_debug, 2026-11-23, of
 * ~0.92 s of initcalls): crypto_kdf108_init (~0.20 s) is only a self-test of the SP800-108
 * KDF that `cryptomgr.notests` does not cover; init_kprobe_trace (~0.10 s) sets up kprobe
 * trace events, which this busybox guest has no tracer for. Neither registers anything
 * else the guest uses.
 */
export const DEFAULT_GUEST_APPEND =
  "quiet cryptomgr.notests initcall_blacklist=crypto_kdf108_init,init_kprobe_trace";

/** A file Palisade writes into the guest. */
export interface GuestFile {
  readonly path: string;
  readonly text: string;
  readonly mode: number;
}

/** Guest path of the list of modules `/init` loads at every boot, one name per line. */
export const MODULE_LIST_PATH = "/etc/palisade/modules";

/**
 * The part of `/init` that loads drivers by device (coldplug), kept apart so a host-side
 * test can run it against a fake sysfs (`guest-files.test.ts`). Loading a driver can reveal
 * more devices, so it loops while new modaliases appear, at most 8 rounds.
 */
export const COLDPLUG = `# Then coldplug: the driver of each device the VM has, from the modalias the device shows
# in sysfs (input is a class, not a bus) and the image's modules.alias. Loading a driver
# can reveal more devices (virtio_mmio's virtio devices, the power button's input device),
# so this goes on while new ones appear, at most 8 rounds. A VM loads the drivers of its
# own devices only, not every driver of the image.
seen=" "
round=0
while [ $round -lt 8 ]; do
  new=
  for file in /sys/bus/*/devices/*/modalias /sys/class/input/*/modalias; do
    read -r alias 2>/dev/null <"$file" || continue
    case "$seen" in *" $alias "*) continue ;; esac
    seen="$seen$alias "
    new="$new $alias"
  done
  [ -n "$new" ] || break
  # A modalias is data, not a glob pattern.
  set -f
  modprobe -a -q $new
  set +f
  round=$((round + 1))
done
`;

// Runs as PID 1 under busybox ash. Every external command is a fork and exec, which
// costs ~5-10 ms under TCG, so the script keeps them few and never sleeps.
const INIT = `#!/bin/sh
# Palisade guest init: the contract is docs/design/guest-image.md. Runs as PID 1.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin HOME=/root TERM=vt100
# proc, sysfs, devtmpfs, tmpfs /tmp and /run from /etc/fstab in one exec; devpts needs
# /dev/pts, which exists only once devtmpfs is mounted.
mount -a
exec </dev/console >/dev/console 2>&1
mkdir -p /dev/pts /dev/shm /run/palisade
mount -t devpts -o nosuid,noexec,gid=5,mode=0620,ptmxmode=0666 devpts /dev/pts

# Drivers. First the modules that drive no device (file systems and the like), listed by
# the image builder; modprobe loads their dependencies from modules.dep.
modules=
while read -r module; do modules="$modules \${module##*/}"; done <${MODULE_LIST_PATH}
if [ -n "$modules" ]; then modprobe -a $modules || echo "palisade-init: some modules did not load"; fi
${COLDPLUG}
# palisade.net=dhcp (default) | none | ADDRESS/PREFIX[,GATEWAY] on the kernel command line.
net=dhcp
read -r cmdline </proc/cmdline
for arg in $cmdline; do
  case "$arg" in palisade.net=*) net="\${arg#palisade.net=}" ;; esac
done
echo palisade >/proc/sys/kernel/hostname
ip link set lo up
if [ -e /sys/class/net/eth0 ] && [ "$net" != none ]; then
  ip link set eth0 up
  case "$net" in
    dhcp)
      # Waits for a lease at most ~3 s (QEMU user networking answers at once), then
      # goes on trying in the background.
      udhcpc -i eth0 -s /etc/palisade/udhcpc.script -q -b -t 3 -T 1 >/run/palisade/udhcpc.log 2>&1 ;;
    *,*)
      ip addr add "\${net%%,*}" dev eth0 && ip route add default via "\${net#*,}" ;;
    *)
      ip addr add "$net" dev eth0 ;;
  esac
fi

# The ACPI power button (QEMU system_powerdown) runs /etc/acpi/PWRF/00000080.
# acpid writes its pid file once it has opened the input devices: wait for it (at most
# ~1 s), so a power-button press that follows the ready marker is never lost.
if [ -e /dev/input/event0 ]; then
  acpid -c /etc/acpi -l /run/palisade/acpid.log -p /run/palisade/acpid.pid
  n=0
  while [ ! -e /run/palisade/acpid.pid ] && [ $n -lt 100 ]; do sleep 0.01; n=$((n + 1)); done
fi

# busybox poweroff, reboot and halt signal PID 1 (USR2, TERM, USR1); "wait" below is
# interrupted by a trapped signal, so these act at once.
trap 'poweroff -f' USR2
trap 'reboot -f' TERM
trap 'halt -f' USR1

echo ${READY_MARKER}
# The console shell, with job control: cttyhack opens the real tty (e.g. ttyS0) as its
# controlling terminal; a new session and shell each time one exits. "setsid setsid"
# returns at once (the second setsid forks), so the loop runs as an orphan started in
# the foreground: starting it with "&" would ignore SIGINT in it for good (POSIX
# asynchronous lists), and Ctrl-C would be dead in the shell.
setsid setsid sh -c 'while :; do setsid cttyhack sh -l; done'
while :; do
  sleep 2147483647 &
  wait
done
`;

const FSTAB = `proc /proc proc nosuid,nodev,noexec 0 0
sysfs /sys sysfs nosuid,nodev,noexec 0 0
devtmpfs /dev devtmpfs nosuid,mode=0755 0 0
tmpfs /tmp tmpfs nosuid,nodev,mode=1777 0 0
tmpfs /run tmpfs nosuid,nodev,mode=0755 0 0
`;

const PROFILE = `export PATH=/sbin:/bin:/usr/sbin:/usr/bin HOME=/root
export PS1='${SHELL_PROMPT}'
cd /root
`;

// udhcpc calls this with $1 = deconfig | bound | renew | leasefail | nak and the lease in
// the environment ($interface, $ip, $mask as a prefix length, $router, $dns, $domain).
const UDHCPC_SCRIPT = `#!/bin/sh
case "$1" in
  deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up ;;
  bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/\${mask:-24}" dev "$interface"
    for gateway in $router; do
      ip route replace default via "$gateway" dev "$interface" && break
    done
    : >/etc/resolv.conf
    [ -n "$domain" ] && echo "search $domain" >>/etc/resolv.conf
    for server in $dns; do echo "nameserver $server" >>/etc/resolv.conf; done ;;
esac
exit 0
`;

const ACPI_POWER_BUTTON = `#!/bin/sh
exec poweroff
`;

/**
 * Every file of the guest system Palisade writes, except the module list (which depends
 * on the kernel; see {@link moduleListFile}).
 */
export function guestSystemFiles(): GuestFile[] {
  return [
    { path: "/init", text: INIT, mode: 0o755 },
    { path: "/etc/profile", text: PROFILE, mode: 0o644 },
    { path: "/etc/fstab", text: FSTAB, mode: 0o644 },
    { path: "/etc/passwd", text: "root:x:0:0:root:/root:/bin/sh\n", mode: 0o644 },
    { path: "/etc/group", text: "root:x:0:\ntty:x:5:\n", mode: 0o644 },
    { path: "/etc/hosts", text: "127.0.0.1 localhost\n127.0.1.1 palisade\n", mode: 0o644 },
    { path: "/etc/resolv.conf", text: "", mode: 0o644 },
    { path: "/etc/palisade/udhcpc.script", text: UDHCPC_SCRIPT, mode: 0o755 },
    { path: "/etc/acpi/PWRF/00000080", text: ACPI_POWER_BUTTON, mode: 0o755 },
  ];
}

/** Directories the guest needs even when empty (mount points and homes). */
export const GUEST_DIRECTORIES: readonly { path: string; mode: number }[] = [
  { path: "/proc", mode: 0o555 },
  { path: "/sys", mode: 0o555 },
  { path: "/dev", mode: 0o755 },
  { path: "/run", mode: 0o755 },
  { path: "/tmp", mode: 0o1777 },
  { path: "/root", mode: 0o700 },
  { path: "/mnt", mode: 0o755 },
  { path: "/var", mode: 0o755 },
];

/**
 * The list of modules `/init` loads at every boot, one name per line (device drivers are
 * not in it: `/init` loads those by device, through `modules.alias`).
 */
export function moduleListFile(moduleNames: readonly string[]): GuestFile {
  return { path: MODULE_LIST_PATH, text: moduleNames.map((name) => `${name}\n`).join(""), mode: 0o644 };
}
