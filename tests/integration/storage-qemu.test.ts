/**
 * Interoperability with Debian's qemu-img and qemu-io, both directions: images QEMU makes
 * read byte for byte as `qemu-img convert -O raw` reads them; images Palisade makes pass
 * `qemu-img check` and `qemu-img compare`; differencing chains over QEMU-made bases; a
 * VHDX left with a pending log is repaired by `palisade disk check --repair` into one
 * QEMU accepts. Images are tens of MiB so the tier stays fast.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createImage, FaultFile, MemoryFile, openImage, PowerCut, VhdxImage } from "../../src/storage/index.js";

const MiB = 1024 * 1024;
/** The shipped CLI: the bundle scripts/bundle.mjs makes beside the compiled tree (OUTDIR/bin). */
const CLI = fileURLToPath(new URL("../../bin/palisade.cjs", import.meta.url));
let dir = "";

before(() => {
  assert.ok(existsSync(CLI), `${CLI} is missing: bundle the CLI first (npm run build)`);
  dir = mkdtempSync(join(tmpdir(), "palisade-storage-"));
});
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

function qemu(tool: "qemu-img" | "qemu-io", args: string[]): string {
  return execFileSync(tool, args, { encoding: "utf8", timeout: 60_000 });
}

function palisade(args: string[]): { status: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", timeout: 120_000 });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** A pattern no two sectors share, so misplaced data cannot compare equal. */
function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed * 2654435761 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

async function readWhole(path: string): Promise<Buffer> {
  const image = await openImage(path, { readonly: true });
  try {
    return Buffer.from(await image.read(0, image.sizeBytes));
  } finally {
    await image.close();
  }
}

const QEMU_WRITES = ["write -P 0xa1 0 1M", "write -P 0xb2 5243392 70k", "write -P 0xc3 20M 4k", "write -z 21M 64k"];

for (const [format, subformat] of [
  ["vhdx", "dynamic"],
  ["vhdx", "fixed"],
  ["vpc", "dynamic"],
  ["vpc", "fixed"],
] as const) {
  test(`qemu → palisade: a ${subformat} ${format} written by qemu-io reads as qemu-img convert -O raw reads it`, async () => {
    const image = join(dir, `qemu-${subformat}.${format}`);
    const raw = `${image}.raw`;
    qemu("qemu-img", ["create", "-q", "-f", format, "-o", `subformat=${subformat}`, image, "24M"]);
    qemu("qemu-io", ["-f", format, ...QEMU_WRITES.flatMap((c) => ["-c", c]), image]);
    qemu("qemu-img", ["convert", "-f", format, "-O", "raw", image, raw]);

    const ours = await readWhole(image);

    assert.equal(ours.length, readFileSync(raw).length);
    assert.ok(ours.equals(readFileSync(raw)), "contents differ from qemu-img's");
  });
}

for (const [format, type, logicalSector] of [
  ["vhdx", "dynamic", 512],
  ["vhdx", "fixed", 512],
  ["vhdx", "dynamic", 4096],
  ["vhd", "dynamic", 512],
  ["vhd", "fixed", 512],
] as const) {
  test(`palisade → qemu: a ${type} ${format} (${logicalSector}-byte sectors) passes qemu-img check and compare`, async () => {
    const path = join(dir, `ours-${type}-${logicalSector}.${format}`);
    const expected = new Uint8Array(40 * MiB);
    const image = await createImage(path, { format, type, sizeBytes: expected.length, logicalSectorBytes: logicalSector });
    for (const [offset, length, seed] of [
      [0, 4096, 1],
      [3 * MiB + 4096, 300_000, 2],
      [33 * MiB - 8192, 16384, 3],
      [39 * MiB, MiB, 4],
    ] as const) {
      const data = pattern(length, seed);
      await image.write(offset, data);
      expected.set(data, offset);
    }
    await image.close();
    const raw = `${path}.expected.raw`;
    writeFileSync(raw, expected);

    assert.ok((await readWhole(path)).equals(expected), "palisade reads its own image wrong");
    if (logicalSector === 4096) {
      // QEMU 7.2's VHDX driver refuses 4096-byte logical sectors ("Operation not supported").
      return;
    }
    if (format === "vhdx") assert.match(qemu("qemu-img", ["check", "-f", "vhdx", path]), /No errors were found/);
    const qemuFormat = format === "vhd" ? "vpc" : "vhdx";
    assert.match(qemu("qemu-img", ["compare", "-f", "raw", "-F", qemuFormat, raw, path]), /Images are identical/);
    assert.match(qemu("qemu-img", ["info", "-f", qemuFormat, path]), new RegExp(`virtual size: .*\\(${expected.length} bytes\\)`));
  });
}

for (const [format, qemuFormat] of [
  ["vhdx", "vhdx"],
  ["vhd", "vpc"],
] as const) {
  test(`chains: a palisade ${format} differencing disk over a qemu-made base reads base plus child, and merges into a base qemu reads`, async () => {
    const base = join(dir, `chain-base.${format}`);
    const child = join(dir, `chain-child.${format}`);
    qemu("qemu-img", ["create", "-q", "-f", qemuFormat, "-o", "subformat=dynamic", base, "16M"]);
    qemu("qemu-io", ["-f", qemuFormat, "-c", "write -P 0x5a 0 6M", base]);
    const baseRaw = join(dir, `chain-base-${format}.raw`);
    qemu("qemu-img", ["convert", "-f", qemuFormat, "-O", "raw", base, baseRaw]);
    const expected = new Uint8Array(readFileSync(baseRaw));

    assert.equal(palisade(["disk", "create", child, "--parent", base]).status, 0);
    const image = await openImage(child, { readonly: false });
    const data = pattern(5000, 9);
    await image.write(MiB + 100, data);
    expected.set(data, MiB + 100);
    await image.discard(4 * MiB, 2 * MiB);
    expected.fill(0, 4 * MiB, 6 * MiB);
    await image.close();

    assert.ok((await readWhole(child)).equals(expected), "the chain reads wrong");
    // QEMU can neither make a differencing VHD/VHDX nor follow one's parent (it reads a
    // differencing VHD as if it had none): the chain reaches it flattened, or merged.
    const flat = join(dir, `chain-flat.${format}`);
    const convert = palisade(["disk", "convert", child, flat]);
    assert.equal(convert.status, 0, convert.stderr);
    const chainRaw = join(dir, `chain-expected-${format}.raw`);
    writeFileSync(chainRaw, expected);
    assert.match(qemu("qemu-img", ["compare", "-f", "raw", "-F", qemuFormat, chainRaw, flat]), /Images are identical/);
    const info = JSON.parse(palisade(["disk", "info", "--json", child]).stdout) as { type: string; parentChain: string[] };
    assert.equal(info.type, "differencing");
    assert.deepEqual(info.parentChain, [base]);

    const merge = palisade(["disk", "merge", child]);
    assert.equal(merge.status, 0, merge.stderr);
    const mergedRaw = join(dir, `chain-merged-${format}.raw`);
    writeFileSync(mergedRaw, expected);
    assert.match(qemu("qemu-img", ["compare", "-f", "raw", "-F", qemuFormat, mergedRaw, base]), /Images are identical/);
    if (format === "vhdx") assert.match(qemu("qemu-img", ["check", "-f", "vhdx", base]), /No errors were found/);
  });
}

test("chains: a differencing disk whose parent changed identity is refused, naming both", () => {
  const base = join(dir, "swap-base.vhdx");
  const child = join(dir, "swap-child.vhdx");
  assert.equal(palisade(["disk", "create", base, "--size", "8M"]).status, 0);
  assert.equal(palisade(["disk", "create", child, "--parent", base]).status, 0);
  rmSync(base);
  assert.equal(palisade(["disk", "create", base, "--size", "8M"]).status, 0);

  const r = palisade(["disk", "info", child]);

  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /parent_linkage.*\[disk\.parent-mismatch\]/);
});

test("chains: a missing parent and a parent chain that loops are refused with their codes", () => {
  const base = join(dir, "loop-base.vhdx");
  const child = join(dir, "loop-child.vhdx");
  const other = join(dir, "loop-other.vhdx");
  assert.equal(palisade(["disk", "create", base, "--size", "8M"]).status, 0);
  assert.equal(palisade(["disk", "create", child, "--parent", base]).status, 0);
  // Put a differencing disk over the child where the base was: child -> base -> child.
  assert.equal(palisade(["disk", "create", other, "--parent", child]).status, 0);
  rmSync(base);
  const missing = palisade(["disk", "info", child]);
  assert.match(missing.stderr, /parent not found.*\[disk\.parent-missing\]/);
  writeFileSync(base, readFileSync(other));

  const loop = palisade(["disk", "info", child]);

  assert.notEqual(loop.status, 0);
  assert.match(loop.stderr, /parent chain loops back.*\[disk\.parent-loop\]/);
});

test("dirty log: a VHDX cut after its log entry opens right in palisade, and check --repair makes one qemu-img accepts", async () => {
  const size = 16 * MiB;
  const seed = new MemoryFile();
  await (await VhdxImage.create(seed, { sizeBytes: size, type: "dynamic", blockSizeBytes: MiB })).close();
  const data = pattern(64 * 1024, 5);
  // Find the first cut that leaves a log entry to replay: the write's data and its log
  // entry are flushed, the BAT entry is not yet in place.
  let dirty: Uint8Array | undefined;
  for (let cut = 1; cut < 64 && dirty === undefined; cut++) {
    const file = new FaultFile(seed.bytes(), { cutAfter: cut });
    const image = await VhdxImage.open(file, { readonly: false });
    try {
      await image.write(3 * MiB, data);
      await image.flush();
    } catch (error: unknown) {
      if (!(error instanceof PowerCut)) throw error;
    }
    const crashed = file.crashImage(false);
    const probe = await VhdxImage.open(new MemoryFile(crashed, { writable: false }), { readonly: true });
    if (probe.replayedLog) dirty = crashed;
    await probe.close();
  }
  assert.ok(dirty, "no cut point left a pending log");
  const path = join(dir, "dirty.vhdx");
  writeFileSync(path, dirty);
  const expected = new Uint8Array(size);
  expected.set(data, 3 * MiB);
  const raw = join(dir, "dirty-expected.raw");
  writeFileSync(raw, expected);

  assert.ok((await readWhole(path)).equals(expected), "palisade reads wrong data from the dirty image");
  assert.ok(Buffer.from(readFileSync(path)).equals(Buffer.from(dirty)), "a read-only open wrote to the file");
  const qemuBefore = spawnSync("qemu-img", ["check", "-f", "vhdx", path], { encoding: "utf8", timeout: 60_000 });
  assert.notEqual(qemuBefore.status, 0, "qemu-img accepted a dirty log read-only");
  const check = palisade(["disk", "check", path]);
  assert.equal(check.status, 1);
  assert.match(check.stdout, /log: entries pending replay/);

  const repair = palisade(["disk", "check", "--repair", path]);

  assert.equal(repair.status, 0, repair.stderr);
  assert.match(qemu("qemu-img", ["check", "-f", "vhdx", path]), /No errors were found/);
  assert.match(qemu("qemu-img", ["compare", "-f", "raw", "-F", "vhdx", raw, path]), /Images are identical/);
});

test("cli: convert raw→vhdx→vhd→raw (one step --no-flush) keeps the data and the holes; map and compact report allocation", async () => {
  const raw = join(dir, "cli-source.raw");
  const expected = new Uint8Array(48 * MiB);
  expected.set(pattern(3 * MiB, 11), 2 * MiB);
  expected.set(pattern(4096, 12), 40 * MiB);
  writeFileSync(raw, expected);
  const vhdx = join(dir, "cli.vhdx");
  const vhd = join(dir, "cli.vhd");
  const back = join(dir, "cli-back.raw");

  // The middle step as qemu-img converts by default: not flushed (--no-flush).
  for (const [src, dst, flags] of [
    [raw, vhdx, []],
    [vhdx, vhd, ["--no-flush"]],
    [vhd, back, []],
  ] as const) {
    const r = palisade(["disk", "convert", ...flags, src, dst, ...(dst.endsWith(".raw") ? [] : ["--block-size", "1M"])]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stderr, "", "a progress bar (or anything) on stderr when it is not a terminal");
  }

  assert.ok(readFileSync(back).equals(expected));
  assert.match(qemu("qemu-img", ["compare", "-f", "raw", "-F", "vhdx", raw, vhdx]), /Images are identical/);
  assert.match(qemu("qemu-img", ["compare", "-f", "raw", "-F", "vpc", raw, vhd]), /Images are identical/);
  const map = JSON.parse(palisade(["disk", "map", "--json", vhdx]).stdout) as { offset: number; length: number; state: string }[];
  const dataBytes = map.filter((r) => r.state === "data").reduce((sum, r) => sum + r.length, 0);
  // 1 MiB blocks: 2-5 MiB and 40 MiB hold data (4 blocks, and within them only the
  // 64 KiB grains convert wrote); the rest stays holes.
  assert.ok(dataBytes >= 3 * MiB + 4096 && dataBytes <= 4 * MiB, `data bytes ${dataBytes}`);
  const image = await openImage(vhdx, { readonly: false });
  await image.discard(32 * MiB, 16 * MiB);
  await image.close();
  const compact = JSON.parse(palisade(["disk", "compact", "--json", vhdx]).stdout) as { beforeBytes: number; afterBytes: number };
  assert.ok(compact.afterBytes < compact.beforeBytes, `compact did not shrink the file: ${JSON.stringify(compact)}`);
  assert.match(qemu("qemu-img", ["check", "-f", "vhdx", vhdx]), /No errors were found/);
});

test("cli: resize grows a VHDX qemu-img then sees, and refuses to shrink over data", () => {
  const path = join(dir, "resize.vhdx");
  assert.equal(palisade(["disk", "create", path, "--size", "16M"]).status, 0);
  qemu("qemu-io", ["-f", "vhdx", "-c", "write -P 0x77 15M 4k", path]);

  assert.equal(palisade(["disk", "resize", path, "--size", "64M"]).status, 0);
  assert.match(qemu("qemu-img", ["info", "-f", "vhdx", path]), /\(67108864 bytes\)/);
  const shrink = palisade(["disk", "resize", path, "--size", "8M"]);

  assert.notEqual(shrink.status, 0);
  assert.match(shrink.stderr, /cannot shrink.*\[disk\.bad-size\]/);
});

test("cli: a VHDX with both headers damaged fails with one line naming file, structure and field", () => {
  const path = join(dir, "broken.vhdx");
  assert.equal(palisade(["disk", "create", path, "--size", "8M"]).status, 0);
  const bytes = readFileSync(path);
  bytes[64 * 1024 + 200] = 1;
  bytes[128 * 1024 + 200] = 1;
  writeFileSync(path, bytes);

  const r = palisade(["disk", "info", path]);

  assert.equal(r.status, 2, "a broken image is a bad file given by the user: exit 2");
  assert.equal(r.stderr.trim().split("\n").length, 1);
  assert.match(r.stderr, /broken\.vhdx: header 1 at 0x10004: Checksum: .* \[vhdx\.bad-header\]/);
});

test("cli: resize grows a dynamic VHD past its BAT (the BAT moves to the end) into one qemu-img reads, and shrinks it back", async () => {
  const path = join(dir, "grow.vhd");
  assert.equal(palisade(["disk", "create", path, "--size", "16M"]).status, 0);
  qemu("qemu-io", ["-f", "vpc", "-c", "write -P 0x77 15M 4k", path]);

  const grow = palisade(["disk", "resize", path, "--size", "64M"]);

  assert.equal(grow.status, 0, grow.stderr);
  const expected = new Uint8Array(64 * MiB);
  expected.fill(0x77, 15 * MiB, 15 * MiB + 4096);
  const image = await openImage(path, { readonly: false });
  await image.write(60 * MiB, new Uint8Array(8192).fill(0x66));
  await image.close();
  expected.fill(0x66, 60 * MiB, 60 * MiB + 8192);
  const raw = join(dir, "grow-expected.raw");
  writeFileSync(raw, expected);
  assert.match(qemu("qemu-img", ["info", "-f", "vpc", path]), /\(67108864 bytes\)/);
  assert.match(qemu("qemu-img", ["compare", "-f", "raw", "-F", "vpc", raw, path]), /Images are identical/);
  assert.ok((await readWhole(path)).equals(expected));
  assert.match(palisade(["disk", "resize", path, "--size", "32M"]).stderr, /cannot shrink to 33554432 bytes: data at 0x3c00000.*\[disk\.bad-size\]/);
});

test("cli: a raw image shrinks only when the cut-off tail holds no data", () => {
  const path = join(dir, "shrink.raw");
  const bytes = new Uint8Array(8 * MiB);
  bytes.fill(1, 6 * MiB, 6 * MiB + 512);
  writeFileSync(path, bytes);

  const refused = palisade(["disk", "resize", path, "--size", "4M"]);
  const allowed = palisade(["disk", "resize", path, "--size", "7M", "--json"]);

  assert.equal(refused.status, 2);
  assert.match(refused.stderr, /shrink\.raw: cannot shrink to 4194304 bytes: data at 0x600000 past the new end \[disk\.bad-size\]/);
  assert.equal(allowed.status, 0, allowed.stderr);
  assert.deepEqual(JSON.parse(allowed.stdout), { path, virtualSizeBytes: 7 * MiB });
  assert.equal(readFileSync(path).length, 7 * MiB);
});

test("cli: a flag the format has no field for is a configuration error (exit 2) naming the flag", () => {
  const r = palisade(["disk", "create", join(dir, "flag.vhd"), "--size", "8M", "--logical-sector", "4096"]);

  assert.equal(r.status, 2);
  assert.match(r.stderr, /--logical-sector: not a setting of vhd images .*\[disk\.bad-flag\]/);
});

test("cli: on a terminal, convert draws a progress bar on stderr that ends at 100% and a new line", () => {
  const src = join(dir, "tty.raw");
  const bytes = new Uint8Array(64 * MiB);
  bytes.set(pattern(MiB, 21), 10 * MiB);
  writeFileSync(src, bytes);
  const dst = join(dir, "tty.vhdx");
  // script(1) runs the command on a pseudo-terminal and copies what it prints.
  const shell = `exec ${[process.execPath, CLI, "disk", "convert", src, dst].map((a) => `'${a}'`).join(" ")}`;

  const r = spawnSync("script", ["-qec", shell, "/dev/null"], { encoding: "utf8", timeout: 120_000 });

  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /\rconvert \[#{30}\] 100%\r?\n$/);
  assert.match(qemu("qemu-img", ["compare", "-f", "raw", "-F", "vhdx", src, dst]), /Images are identical/);
});
