;; Exports the default entry `run` beside `add`: with no entry named, `run` wins.
(module
  (func (export "run") (result i64) i64.const 7)
  (func (export "add") (param i64 i64) (result i64) local.get 0 local.get 1 i64.add))
