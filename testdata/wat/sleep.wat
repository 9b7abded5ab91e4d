;; Hostile: sleeps through WASI's poll_oneoff on one relative monotonic clock subscription of
;; `ns` nanoseconds (-1 is u64::MAX: for ever), then returns the monotonic time it reads. Guest
;; time is virtual: the sleep must return at once, with the clock moved past the deadline.
(module
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get"
    (func $clock_time_get (param i32 i64 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "sleep") (param $ns i64) (result i64)
    ;; The subscription at 0: userdata 7, tag clock, clock id monotonic, timeout, flags relative.
    (i64.store (i32.const 0) (i64.const 7))
    (i32.store8 offset=8 (i32.const 0) (i32.const 0))
    (i32.store offset=16 (i32.const 0) (i32.const 1))
    (i64.store offset=24 (i32.const 0) (local.get $ns))
    (i64.store offset=32 (i32.const 0) (i64.const 0))
    (i32.store16 offset=40 (i32.const 0) (i32.const 0))
    ;; Events at 64, their count at 128.
    (if (call $poll_oneoff (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128))
      (then unreachable))
    (if (i32.ne (i32.load (i32.const 128)) (i32.const 1)) (then unreachable))
    (if (i64.ne (i64.load (i32.const 64)) (i64.const 7)) (then unreachable))
    (if (i32.load16_u offset=8 (i32.const 64)) (then unreachable))
    (if (call $clock_time_get (i32.const 1) (i64.const 1) (i32.const 136)) (then unreachable))
    (i64.load (i32.const 136))))
