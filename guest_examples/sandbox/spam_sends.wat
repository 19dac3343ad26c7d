;; spam_sends — push_send_to_user in a loop until the host refuses.
;; output: i32 LE accepted count, i32 LE the refusing code (-8 LIMIT expected at the cap).
(module
  (import "wasmhost" "push_send_to_user" (func $send (param i32 i32 i32 i32) (result i32)))
  (import "wasmhost" "output_write" (func $output_write (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "alice")
  (data (i32.const 64) "{\"title\":\"hi\"}")
  (func (export "handle") (result i32) (local $n i32) (local $r i32)
    (block $refused
      (loop $again
        (local.set $r (call $send (i32.const 16) (i32.const 5) (i32.const 64) (i32.const 14)))
        (br_if $refused (i32.lt_s (local.get $r) (i32.const 0)))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br_if $refused (i32.ge_u (local.get $n) (i32.const 100000)))
        (br $again)))
    (i32.store (i32.const 0) (local.get $n))
    (i32.store (i32.const 4) (local.get $r))
    (drop (call $output_write (i32.const 0) (i32.const 8)))
    (i32.const 0)))
