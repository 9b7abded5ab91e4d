;; Grows a table by a billion elements: refused by the table budget.
(module
  (table $t 1 funcref)
  (func (export "run") (result i32) (table.grow $t (ref.null func) (i32.const 1000000000))))
