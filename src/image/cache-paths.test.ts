import assert from "node:assert/strict";
import { test } from "node:test";
import { defaultImageDir, downloadsDir, palisadeCacheDir } from "./cache-paths.js";

test("cache-paths: XDG_CACHE_HOME wins when absolute; otherwise ~/.cache", () => {
  assert.equal(palisadeCacheDir({ XDG_CACHE_HOME: "/var/cache/me" }, "/home/u"), "/var/cache/me/palisade");
  assert.equal(palisadeCacheDir({}, "/home/u"), "/home/u/.cache/palisade");
  assert.equal(palisadeCacheDir({ XDG_CACHE_HOME: "relative/dir" }, "/home/u"), "/home/u/.cache/palisade");
  assert.equal(palisadeCacheDir({ XDG_CACHE_HOME: "" }, "/root"), "/root/.cache/palisade");
});

test("cache-paths: downloads and images live apart under the root", () => {
  assert.equal(downloadsDir("/c/palisade"), "/c/palisade/downloads");
  assert.equal(defaultImageDir("/c/palisade"), "/c/palisade/images/default");
});
