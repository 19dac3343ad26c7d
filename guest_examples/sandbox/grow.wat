;; grow — asks for far more memory than any cap, then grows one page at a time until refused.
;; output: i32 LE = memory.grow(65535) result (-1 expected), i32 LE = pages in the end.
(module
  (import "wasmhost" "output_write" (func $output_write (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "handle") (result i32)
    (i32.store (i32.const 0) (memory.grow (i32.const 65535)))
    (block $refused
      (loop $more
        (br_if $refused (i32.eq (memory.grow (i32.const 1)) (i32.const -1)))
        (br $more)))
    (i32.store (i32.const 4) (memory.size))
    (drop (call $output_write (i32.const 0) (i32.const 8)))
    (i32.const 0)))
