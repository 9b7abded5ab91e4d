;; A guest that never returns: `loop` spins until it is interrupted (timeout or cancel).
(module (func (export "loop") (loop br 0)))
