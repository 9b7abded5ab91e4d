;; A WASI reactor: `_initialize` must run once before the entry, or `get` returns 0.
(module
  (global $state (mut i32) (i32.const 0))
  (global $inits (mut i32) (i32.const 0))
  (func (export "_initialize")
    (global.set $state (i32.add (global.get $state) (i32.const 42)))
    (global.set $inits (i32.add (global.get $inits) (i32.const 1))))
  (func (export "get") (result i32) global.get $state)
  (func (export "inits") (result i32) global.get $inits))
