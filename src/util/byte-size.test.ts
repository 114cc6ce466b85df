import assert from "node:assert/strict";
import { test } from "node:test";
import { ConfigError } from "./errors.js";
import { formatByteSize, parseByteSize } from "./byte-size.js";

test("byte-size: binary units as QEMU reads them", () => {
  assert.equal(parseByteSize("512M", "--memory"), 512n * 1024n * 1024n);
  assert.equal(parseByteSize("20G", "--size"), 20n << 30n);
  assert.equal(parseByteSize("1.5G", "--size"), 3n << 29n);
  assert.equal(parseByteSize("4096", "--size"), 4096n);
  assert.equal(parseByteSize("64TiB", "--size"), 64n << 40n);
});

test("byte-size: garbage is refused with the flag named", () => {
  assert.throws(() => parseByteSize("lots", "--memory"), (error: unknown) => {
    assert.ok(error instanceof ConfigError);
    assert.match(error.message, /^--memory: "lots" is not a size/);
    return true;
  });
  assert.throws(() => parseByteSize("-1M", "--memory"), ConfigError);
  assert.throws(() => parseByteSize("12Q", "--memory"), ConfigError);
});

test("byte-size: formatting for people", () => {
  assert.equal(formatByteSize(512n << 20n), "512 MiB");
  assert.equal(formatByteSize(3n << 29n), "1.5 GiB");
  assert.equal(formatByteSize(100), "100 B");
});
