import assert from "node:assert/strict";
import { test } from "node:test";
import { ConfigError } from "../util/errors.js";
import { parseLddOutput } from "./ldd.js";

// `ldd /usr/bin/ls` on Debian 12.
const LS = `	linux-vdso.so.1 (0x00007ffd5a3f5000)
	libselinux.so.1 => /lib/x86_64-linux-gnu/libselinux.so.1 (0x00007f06fc3bc000)
	libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f06fc1da000)
	libpcre2-8.so.0 => /lib/x86_64-linux-gnu/libpcre2-8.so.0 (0x00007f06fc140000)
	/lib64/ld-linux-x86-64.so.2 (0x00007f06fc424000)
`;

test("ldd: libraries with their host paths, the loader included, the vDSO left out", () => {
  const result = parseLddOutput(LS);

  assert.equal(result.isStatic, false);
  assert.deepEqual(result.libraries, [
    { name: "libselinux.so.1", path: "/lib/x86_64-linux-gnu/libselinux.so.1" },
    { name: "libc.so.6", path: "/lib/x86_64-linux-gnu/libc.so.6" },
    { name: "libpcre2-8.so.0", path: "/lib/x86_64-linux-gnu/libpcre2-8.so.0" },
    { name: "/lib64/ld-linux-x86-64.so.2", path: "/lib64/ld-linux-x86-64.so.2" },
  ]);
  assert.deepEqual(result.missing, []);
});

test("ldd: a static binary has no libraries", () => {
  const result = parseLddOutput("\tnot a dynamic executable\n");

  assert.equal(result.isStatic, true);
  assert.deepEqual(result.libraries, []);
});

test("ldd: unresolved libraries are reported as missing", () => {
  const result = parseLddOutput(
    "\tlibfoo.so.3 => not found\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n",
  );

  assert.deepEqual(result.missing, ["libfoo.so.3"]);
  assert.equal(result.libraries.length, 1);
});

test("ldd: older glibc's empty arrow for the vDSO is accepted", () => {
  assert.deepEqual(parseLddOutput("\tlinux-vdso.so.1 =>  (0x00007fff)\n").libraries, []);
});

test("ldd: an unknown line is a ConfigError quoting it", () => {
  assert.throws(
    () => parseLddOutput("\tsomething odd happened\n"),
    (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.match(error.message, /something odd happened/);
      return true;
    },
  );
});
