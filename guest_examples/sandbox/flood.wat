;; flood — writes output and log lines until the host says LIMIT, then reports how far it got.
;; logs: i32 LE output writes accepted, i32 LE code, i32 LE log lines accepted, i32 LE code.
;; (the report goes out as one log line of 16 raw bytes, since output is what it just filled)
(module
  (import "wasmhost" "output_write" (func $output_write (param i32 i32) (result i32)))
  (import "wasmhost" "log" (func $log (param i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 1024) "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
  (func (export "handle") (result i32) (local $n i32) (local $r i32)
    (block $stop
      (loop $again
        (local.set $r (call $output_write (i32.const 1024) (i32.const 64)))
        (br_if $stop (i32.ne (local.get $r) (i32.const 0)))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br $again)))
    (i32.store (i32.const 0) (local.get $n))
    (i32.store (i32.const 4) (local.get $r))
    (local.set $n (i32.const 0))
    (block $stop2
      (loop $again2
        (local.set $r (call $log (i32.const 1) (i32.const 1024) (i32.const 16)))
        (br_if $stop2 (i32.ne (local.get $r) (i32.const 0)))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br $again2)))
    (i32.store (i32.const 8) (local.get $n))
    (i32.store (i32.const 12) (local.get $r))
    (i32.const 0)))
