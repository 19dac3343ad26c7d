;; wasi_exit — calls proc_exit(3) from handle: the function's code is 3, not a trap.
(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "handle") (result i32)
    (call $exit (i32.const 3))
    (i32.const 0)))
