;; Recursion on the Wasm call stack only (no shadow stack): stops at the Wasm stack limit.
(module
  (func $down (export "down") (param i64) (result i64)
    (i64.add (call $down (i64.add (local.get 0) (i64.const 1))) (local.get 0))))
