;; Imports a host function nobody provides: a bad module, not a trap.
(module
  (import "env" "launch_missiles" (func $launch (result i32)))
  (func (export "run") (result i32) call $launch))
