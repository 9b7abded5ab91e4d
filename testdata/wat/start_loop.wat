;; A start function that never returns: the time limit must apply during instantiation too.
(module
  (func $forever (loop $l (br $l)))
  (start $forever)
  (func (export "run") (result i32) i32.const 1))
