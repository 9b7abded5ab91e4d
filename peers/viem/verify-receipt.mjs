// Verifies a coordinator's receipt (GET /v1/tasks/{id}/receipt) with viem, a standard Ethereum
// library, apart from our Rust code: the EIP-712 types below are written from
// docs/RESULT_HASH.md ("Receipts"), not taken from the receipt.
//   node peers/viem/verify-receipt.mjs RECEIPT.json
// Prints the signer and exits 0 when the signature is the claimed signer's, 1 when it is not.
import { readFileSync } from "node:fs";
import { recoverTypedDataAddress, verifyTypedData } from "viem";

const receipt = JSON.parse(readFileSync(process.argv[2], "utf8"));
const domain = { name: "wasm-exec receipt", version: "1" };
const types = {
  Receipt: [
    { name: "origin", type: "string" },
    { name: "taskId", type: "string" },
    { name: "moduleCid", type: "string" },
    { name: "entry", type: "string" },
    { name: "inputHash", type: "bytes32" },
    { name: "fuelLimit", type: "uint64" },
    { name: "maxMemoryMb", type: "uint64" },
    { name: "timeoutMs", type: "uint64" },
    { name: "maxOutputBytes", type: "uint64" },
    { name: "resultHash", type: "bytes32" },
    { name: "fuelConsumed", type: "uint64" },
  ],
};
const m = receipt.message;
const message = {
  ...m,
  fuelLimit: BigInt(m.fuelLimit),
  maxMemoryMb: BigInt(m.maxMemoryMb),
  timeoutMs: BigInt(m.timeoutMs),
  maxOutputBytes: BigInt(m.maxOutputBytes),
  fuelConsumed: BigInt(m.fuelConsumed),
};
const request = { domain, types, primaryType: "Receipt", message, signature: receipt.signature };
const recovered = await recoverTypedDataAddress(request);
const valid = await verifyTypedData({ ...request, address: receipt.signer });
console.log(JSON.stringify({ signer: receipt.signer, recovered, valid }));
process.exit(valid ? 0 : 1);
