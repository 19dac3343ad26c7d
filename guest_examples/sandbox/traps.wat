;; traps — input byte selects a guest fault: 0 unreachable, 1 out-of-bounds load, 2 divide by zero,
;; 3 unbounded recursion, 4 return 7 (a plain nonzero code).
(module
  (import "wasmhost" "input_read" (func $input_read (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func $recurse (param $x i32) (result i32)
    (i32.add (call $recurse (i32.add (local.get $x) (i32.const 1))) (i32.const 1)))
  (func (export "handle") (result i32) (local $sel i32)
    (drop (call $input_read (i32.const 0) (i32.const 1)))
    (local.set $sel (i32.load8_u (i32.const 0)))
    (if (i32.eq (local.get $sel) (i32.const 0)) (then unreachable))
    (if (i32.eq (local.get $sel) (i32.const 1)) (then (return (i32.load (i32.const 0x7ffffff0)))))
    (if (i32.eq (local.get $sel) (i32.const 2)) (then (return (i32.div_u (i32.const 1) (i32.load (i32.const 100))))))
    (if (i32.eq (local.get $sel) (i32.const 3)) (then (return (call $recurse (i32.const 0)))))
    (i32.const 7)))
