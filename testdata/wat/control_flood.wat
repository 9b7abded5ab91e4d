;; Hostile: writes `kib` KiB of byte 0x01 to stdout and as much to stderr, 64 KiB per fd_write.
;; Each such byte takes six bytes in a JSON string (\u0001): the result document must stay
;; bounded by what it encodes, not by the raw bytes.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "run") (param $kib i32)
    (local $chunks i32)
    ;; 64 KiB of 0x01 at 65536; the iovec {buf, len} at 0, bytes written at 16.
    (memory.fill (i32.const 65536) (i32.const 1) (i32.const 65536))
    (i32.store (i32.const 0) (i32.const 65536))
    (i32.store (i32.const 4) (i32.const 65536))
    (local.set $chunks (i32.div_u (local.get $kib) (i32.const 64)))
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $chunks)))
        (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))
        (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 16)))
        (local.set $chunks (i32.sub (local.get $chunks) (i32.const 1)))
        (br $next)))))
