import { test } from "node:test";
import assert from "node:assert/strict";
import { parseListenAddress } from "./listen-address.js";
import { ConfigError } from "../util/errors.js";

test("parseListenAddress: unix:PATH and a bare absolute path are Unix sockets", () => {
  assert.deepEqual(parseListenAddress("unix:/run/palisade/service.sock"), {
    kind: "unix",
    path: "/run/palisade/service.sock",
  });
  assert.deepEqual(parseListenAddress("/tmp/s.sock"), { kind: "unix", path: "/tmp/s.sock" });
});

test("parseListenAddress: tcp://HOST:PORT is parsed (the service then refuses it as not yet supported)", () => {
  assert.deepEqual(parseListenAddress("tcp://127.0.0.1:8443"), {
    kind: "tcp",
    host: "127.0.0.1",
    port: 8443,
  });
});

test("parseListenAddress: a bad port, a relative bare path and a path over 107 bytes are refused", () => {
  const refused = (value: string): void => {
    assert.throws(
      () => parseListenAddress(value),
      (e: unknown) => e instanceof ConfigError && e.code === "service.bad-address",
    );
  };
  refused("tcp://host:0");
  refused("tcp://host:70000");
  refused("relative.sock");
  refused(`unix:/${"x".repeat(120)}`);
});
