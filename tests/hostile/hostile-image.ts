/**
 * The hostile tests' guest image: Palisade's default image (same kernel package, same
 * /init) plus, through the image builder's `--add`, the attack programs:
 * - `/usr/local/bin/hostile-guest` (hostile-guest.c, static, built with Debian's gcc):
 *   garbage code, MSR and I/O-port sweeps from user mode; the `msr` module is loaded;
 * - `/root/palisade_hostile.ko` (guest-module/palisade_hostile.c, built against Debian's
 *   headers of that exact kernel by src/image/guest-module.ts): spin with interrupts off on
 *   every vCPU, triple fault, unassigned MMIO, from ring 0;
 * - `/root/.profile`: the console shell loads the module with the action named by
 *   `palisade_hostile.action=…` on the kernel command line, so a guest can misbehave at
 *   every boot without anyone typing (a reset loop).
 * - `/root/triple-fault-init`: a PID 1 (`rdinit=`) that loads the module with action=triple
 *   at once, so each boot resets as early as it can.
 * Built once per inputs (cached under the image cache); the module build is cached too.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { buildImage, DEFAULT_MODULES, ensureDefaultImage, palisadeCacheDir, type BuiltImage } from "../../src/image/index.js";
import { buildGuestModule } from "../../src/image/guest-module.js";
import { before } from "node:test";
import { usePrivatePlacement } from "./guest-harness.js";
import { skipReason } from "./sandbox-harness.js";

/** The sources of the hostile tests (tests/hostile in the checkout, beside the compiled tests). */
export const HOSTILE_SOURCES = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "tests", "hostile");
export const GUEST_PROGRAM = "/usr/local/bin/hostile-guest";
export const GUEST_MODULE = "/root/palisade_hostile.ko";
/** `rdinit=` this: PID 1 triple-faults the guest before Palisade's /init runs (the quickest reset loop). */
export const TRIPLE_FAULT_INIT = "/root/triple-fault-init";

const PROFILE = `# Palisade hostile tests: act as the kernel command line says (palisade_hostile.action=…).
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    palisade_hostile.action=*) insmod ${GUEST_MODULE} action="\${arg#palisade_hostile.action=}" ;;
  esac
done
`;

/**
 * Registers this file's hooks: a private placement directory and the hostile image, built
 * before the tests (none when they are skipped). Returns the image's getter.
 */
export function useHostileImage(): () => BuiltImage {
  let built: BuiltImage | null = null;
  usePrivatePlacement();
  before(async () => {
    if (skipReason() === null) built = await hostileImage();
  });
  return () => {
    if (built === null) throw new Error("the hostile image is built in before(): use it inside a test");
    return built;
  };
}

let image: Promise<BuiltImage> | null = null;

/** The hostile image, built on first use in this process (cheap when cached). */
export function hostileImage(): Promise<BuiltImage> {
  image ??= build();
  return image;
}

async function build(): Promise<BuiltImage> {
  const cacheDir = palisadeCacheDir(process.env, homedir());
  const base = await ensureDefaultImage();
  const module = await buildGuestModule({
    sourceDir: join(HOSTILE_SOURCES, "guest-module"),
    name: "palisade_hostile",
    release: base.manifest.kernel.release,
    packageVersion: base.manifest.kernel.packageVersion ?? "",
    cacheDir,
  });
  const staging = mkdtempSync(join(tmpdir(), "palisade-hostile-image-"));
  try {
    mkdirSync(join(staging, "bin"));
    const program = join(staging, "bin", "hostile-guest");
    execFileSync("gcc", ["-static", "-O1", "-o", program, join(HOSTILE_SOURCES, "hostile-guest.c")], { timeout: 120_000 });
    const profile = join(staging, "profile");
    writeFileSync(profile, PROFILE);
    const tripleInit = join(staging, "triple-fault-init");
    writeFileSync(tripleInit, `#!/bin/busybox sh\nexec /bin/busybox insmod ${GUEST_MODULE} action=triple\n`, { mode: 0o755 });
    return await buildImage({
      cacheDir,
      outDir: join(cacheDir, "images", "hostile-test"),
      kernel: { kind: "package", name: base.manifest.kernel.package ?? "linux-image-cloud-amd64" },
      modules: [...DEFAULT_MODULES, "msr"],
      add: [
        { hostPath: program, guestPath: GUEST_PROGRAM },
        { hostPath: module.modulePath, guestPath: GUEST_MODULE },
        { hostPath: profile, guestPath: "/root/.profile" },
        { hostPath: tripleInit, guestPath: TRIPLE_FAULT_INIT },
      ],
    });
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
}
