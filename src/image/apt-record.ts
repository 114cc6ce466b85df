/**
 * Reading what `apt-cache show` prints (deb822 stanzas, Debian Policy §5.1) and the
 * decisions taken on it: is a package name safe to pass to apt, which package a kernel
 * metapackage stands for. Pure.
 */
import { ConfigError } from "../util/errors.js";

/** The fields of one package stanza, by name (`Package`, `Version`, `Depends` …). */
export type AptRecord = ReadonlyMap<string, string>;

/** One stanza of a package apt can download. */
export interface AptPackage {
  readonly name: string;
  readonly version: string;
  /** Path in the archive (`pool/main/l/…/x.deb`); its base name is the file apt writes. */
  readonly filename: string;
  readonly sizeBytes: number;
  readonly sha256: string;
  /** Dependency alternatives: `a | b, c` is `[["a","b"],["c"]]`, versions dropped. */
  readonly depends: readonly (readonly string[])[];
}

/**
 * Parses the first stanza of deb822 text. Continuation lines (starting with a space or
 * tab) are joined to their field with a newline.
 */
export function parseAptRecord(text: string): AptRecord {
  const fields = new Map<string, string>();
  let last: string | undefined;
  for (const line of text.split("\n")) {
    if (line.trim() === "") {
      if (fields.size > 0) break;
      continue;
    }
    if ((line.startsWith(" ") || line.startsWith("\t")) && last !== undefined) {
      fields.set(last, `${fields.get(last) ?? ""}\n${line.trim()}`);
      continue;
    }
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    last = line.slice(0, colon);
    fields.set(last, line.slice(colon + 1).trim());
  }
  return fields;
}

/** `a (>= 1) | b, c:any` -> `[["a","b"],["c"]]`. */
export function parseDependsField(value: string): string[][] {
  return value
    .split(",")
    .map((group) =>
      group
        .split("|")
        .map((alternative) =>
          alternative
            .trim()
            .replace(/\s*\(.*\)\s*$/, "")
            .replace(/:\S+$/, "")
            .replace(/\s*\[.*\]\s*$/, ""),
        )
        .filter((name) => name !== ""),
    )
    .filter((group) => group.length > 0);
}

/**
 * The stanza as a downloadable package.
 *
 * @throws {ConfigError} (`image.apt-record`) when a field apt always writes is missing or
 *   malformed, naming it.
 */
export function aptPackageOf(record: AptRecord): AptPackage {
  const field = (name: string): string => {
    const value = record.get(name);
    if (value === undefined || value === "") {
      throw new ConfigError(
        `apt's record of package ${record.get("Package") ?? "(unnamed)"} has no ${name} field`,
        "image.apt-record",
      );
    }
    return value;
  };
  const size = Number.parseInt(field("Size"), 10);
  const sha256 = field("SHA256").toLowerCase();
  if (!Number.isSafeInteger(size) || size <= 0 || !/^[0-9a-f]{64}$/.test(sha256)) {
    throw new ConfigError(
      `apt's record of package ${field("Package")}: Size "${field("Size")}" or SHA256 "${sha256}" is malformed`,
      "image.apt-record",
    );
  }
  return {
    name: field("Package"),
    version: field("Version"),
    filename: field("Filename"),
    sizeBytes: size,
    sha256,
    depends: parseDependsField(record.get("Depends") ?? ""),
  };
}

// Debian Policy §5.6.1: lower case letters, digits, + - . ; at least two characters,
// starting with an alphanumeric. Also keeps names from being read as apt options.
const PACKAGE_NAME = /^[a-z0-9][a-z0-9+.-]+$/;

/**
 * Checks a package name typed by a user before it reaches apt.
 *
 * @throws {ConfigError} (`image.bad-package-name`) naming the flag.
 */
export function checkPackageName(name: string, flag: string): string {
  if (!PACKAGE_NAME.test(name)) {
    throw new ConfigError(
      `${flag}: "${name}" is not a Debian package name (lower-case letters, digits, "+", "-", ".")`,
      "image.bad-package-name",
    );
  }
  return name;
}

/** A package that holds a kernel: `linux-image-<version>-<flavour>` (not a metapackage). */
const VERSIONED_KERNEL_PACKAGE = /^linux-image-\d+\.\d+/;

/**
 * The kernel package a metapackage stands for (`linux-image-cloud-amd64` ->
 * `linux-image-6.1.0-56-cloud-amd64`), or `undefined` when `pkg` is itself a versioned
 * kernel package. A metapackage depends on the current versioned one.
 */
export function kernelPackageBehind(pkg: AptPackage): string | undefined {
  if (VERSIONED_KERNEL_PACKAGE.test(pkg.name) && !pkg.name.endsWith("-unsigned")) return undefined;
  for (const group of pkg.depends) {
    const kernel = group.find((name) => name.startsWith("linux-image-"));
    if (kernel !== undefined) return kernel;
  }
  return undefined;
}

/** The name apt gives the downloaded file: the base name of the archive's `Filename`. */
export function debFileName(pkg: AptPackage): string {
  const base = pkg.filename.slice(pkg.filename.lastIndexOf("/") + 1);
  if (!/^[A-Za-z0-9][A-Za-z0-9+.~_%-]*\.deb$/.test(base)) {
    throw new ConfigError(
      `apt's record of package ${pkg.name}: Filename "${pkg.filename}" does not end in a plain .deb name`,
      "image.apt-record",
    );
  }
  return base;
}
