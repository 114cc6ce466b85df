import assert from "node:assert/strict";
import { test } from "node:test";
import { HostError } from "../util/errors.js";
import { chooseAccel } from "./accel.js";
import { KVM_HOST, PVM_HOST } from "./test-fixtures.js";

test("accel: auto picks KVM on a host with hardware virtualization", () => {
  assert.equal(chooseAccel("auto", KVM_HOST).accel, "kvm");
});

test("accel: auto picks TCG on a PVM host and says why", () => {
  const choice = chooseAccel("auto", PVM_HOST);

  assert.equal(choice.accel, "tcg");
  assert.match(choice.reason, /PVM/);
});

test("accel: --accel kvm on a PVM host fails with the reason", () => {
  assert.throws(() => chooseAccel("kvm", PVM_HOST), (error: unknown) => {
    assert.ok(error instanceof HostError);
    assert.match(error.message, /^--accel kvm is unavailable: \/dev\/kvm is PVM/);
    return true;
  });
});

test("accel: --accel kvm without /dev/kvm access names the device", () => {
  const host = { ...KVM_HOST, kvm: { ...KVM_HOST.kvm, deviceUsable: false } };

  assert.throws(() => chooseAccel("kvm", host), /\/dev\/kvm is missing or not readable/);
});

test("accel: tcg is always available", () => {
  assert.equal(chooseAccel("tcg", KVM_HOST).accel, "tcg");
});
