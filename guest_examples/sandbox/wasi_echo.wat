;; wasi_echo — a WASI preview 1 guest: reads stdin to EOF, writes it to stdout prefixed by "echo: ",
;; and writes a line to stderr. Checks that stdin = input, stdout = output, stderr = log.
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "echo: ")
  (data (i32.const 16) "hello from stderr\npartial")
  ;; iovec for reads at 100: {buf = 1024 + total, len = 4096 - total}; nread at 108
  (func (export "handle") (result i32) (local $total i32) (local $n i32)
    (block $eof
      (loop $more
        (i32.store (i32.const 100) (i32.add (i32.const 1024) (local.get $total)))
        (i32.store (i32.const 104) (i32.sub (i32.const 4096) (local.get $total)))
        (if (call $fd_read (i32.const 0) (i32.const 100) (i32.const 1) (i32.const 108)) (then (return (i32.const 9))))
        (local.set $n (i32.load (i32.const 108)))
        (br_if $eof (i32.eqz (local.get $n)))
        (local.set $total (i32.add (local.get $total) (local.get $n)))
        (br $more)))
    ;; two iovecs at 200: "echo: " and the input
    (i32.store (i32.const 200) (i32.const 0))
    (i32.store (i32.const 204) (i32.const 6))
    (i32.store (i32.const 208) (i32.const 1024))
    (i32.store (i32.const 212) (local.get $total))
    (if (call $fd_write (i32.const 1) (i32.const 200) (i32.const 2) (i32.const 216)) (then (return (i32.const 10))))
    (i32.store (i32.const 220) (i32.const 16))
    (i32.store (i32.const 224) (i32.const 25))
    (if (call $fd_write (i32.const 2) (i32.const 220) (i32.const 1) (i32.const 228)) (then (return (i32.const 11))))
    ;; fd 3 does not exist: EBADF (8)
    (if (i32.ne (call $fd_write (i32.const 3) (i32.const 220) (i32.const 1) (i32.const 228)) (i32.const 8))
      (then (return (i32.const 12))))
    (i32.const 0)))
