// `mpirun -np 2 vgg info --distributed`: the MPI library, every rank's host, and the measured all-reduce,
// printed once (by rank 0).
import assert from "node:assert/strict";
import { test } from "node:test";
import { mpirunVgg, mpiSkip } from "./mpi-helpers.js";

test("vgg info --distributed prints the ranks, their hosts and the all-reduce bandwidth", {
  skip: mpiSkip,
  timeout: 300_000,
}, () => {
  const r = mpirunVgg(2, ["info", "--distributed"]);
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /^MPI: Open MPI v\d/m);
  assert.match(r.stdout, /^ranks: 2 \(rank 0 on \S+, rank 1 on \S+\)$/m);
  assert.match(r.stdout, /^all-reduce of 8 bytes: [\d.]+ us$/m);
  assert.match(
    r.stdout,
    /^all-reduce of 64 MB \(float32 sum, in place\): [\d.]+ ms, bus bandwidth [\d.]+ GB\/s/m,
  );
  assert.equal(r.stdout.match(/^ranks:/gm)?.length, 1, "only rank 0 prints");
  const json = mpirunVgg(2, ["info", "--distributed", "--json"]);
  assert.equal(json.status, 0, json.stderr);
  const info = JSON.parse(json.stdout);
  assert.equal(info.ranks, 2);
  assert.equal(info.hosts.length, 2);
  assert.ok(info.busBandwidthBytesPerSecond > 0);
});
