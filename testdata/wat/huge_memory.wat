;; Declares 4 GiB of initial memory: refused at instantiation by MAX_MEMORY_MB.
(module
  (memory (export "memory") 65536)
  (func (export "run") (result i32) i32.const 1))
