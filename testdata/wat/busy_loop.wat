;; Counts down from n: a deterministic amount of work for fuel tests.
(module
  (func (export "count") (param $n i64) (result i64)
    (loop $l
      (local.set $n (i64.sub (local.get $n) (i64.const 1)))
      (br_if $l (i64.gt_s (local.get $n) (i64.const 0))))
    (local.get $n)))
