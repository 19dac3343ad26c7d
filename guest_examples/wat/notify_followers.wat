;; notify-followers in hand-written WebAssembly text, straight on ABI v1 (no SDK).
;;
;; Input:  {"author": "...", "followers": ["...", ...], "text": "..."}
;; Output: {"sent": n, "failed": m, "no_devices": k}
;; Every send is started before any is awaited, so deliveries run concurrently on the host.
;;
;; How it stays small: the input is scanned, not fully decoded. "author" and "text" are copied into
;; the message as the raw insides of their JSON strings (already valid JSON string content, escapes
;; and all). Follower ids are passed as their raw bytes, so an id written with JSON escapes is
;; refused here (counted as failed). Reports are read from their start: the host writes "ok",
;; "devices_attempted" and "devices_succeeded" first, so a 256-byte buffer is enough.
;;
;; Memory: constants below 1024; the input at 4096, then the message, then the tickets; the memory
;; grows to fit (and a too-large input is a bad input, not a trap).
(module
  (import "wasmhost" "input_len" (func $input_len (result i32)))
  (import "wasmhost" "input_read" (func $input_read (param i32 i32) (result i32)))
  (import "wasmhost" "output_write" (func $output_write (param i32 i32) (result i32)))
  (import "wasmhost" "log" (func $log (param i32 i32 i32) (result i32)))
  (import "wasmhost" "push_send_to_user" (func $send (param i32 i32 i32 i32) (result i32)))
  (import "wasmhost" "push_wait" (func $wait (param i32 i32 i32) (result i32)))

  (memory (export "memory") 1)

  (data (i32.const 16) "{\"title\":\"")                  ;; 10
  (data (i32.const 32) " posted\",\"body\":\"")          ;; 17
  (data (i32.const 64) "\",\"data\":{\"author\":\"")      ;; 20
  (data (i32.const 96) "\"}}")                           ;; 3
  (data (i32.const 112) "author")                        ;; 6
  (data (i32.const 120) "text")                          ;; 4
  (data (i32.const 128) "followers")                     ;; 9
  (data (i32.const 144) "{\"ok\":")                      ;; 6
  (data (i32.const 160) ",\"devices_attempted\":")       ;; 21
  (data (i32.const 192) ",\"devices_succeeded\":")       ;; 21
  (data (i32.const 224) "{\"sent\":")                    ;; 8
  (data (i32.const 240) ",\"failed\":")                  ;; 10
  (data (i32.const 256) ",\"no_devices\":")              ;; 14
  (data (i32.const 272) "}")                             ;; 1
  (data (i32.const 288) "bad input: expected {\"author\": \"...\", \"followers\": [\"...\", ...], \"text\": \"...\"}") ;; 79
  (data (i32.const 384) "a send was refused")            ;; 18
  (data (i32.const 416) "a send failed or timed out")    ;; 26
  (data (i32.const 448) "a follower id with JSON escapes is not supported here") ;; 53
  (data (i32.const 512) "bad input: the input does not fit the memory limit") ;; 50

  (global $INPUT i32 (i32.const 4096))
  (global $OUT i32 (i32.const 1024))      ;; the summary (under 64 bytes)
  (global $REPORT i32 (i32.const 2048))   ;; 256 bytes of each report
  (global $BAD_INPUT i32 (i32.const 1))   ;; handle's own error code

  ;; -- scanning helpers: each takes a position and the end, returns the new position or -1 ----

  (func $ws (param $p i32) (param $end i32) (result i32)
    (local $c i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $c (i32.load8_u (local.get $p)))
        (br_if $done (i32.eqz (i32.or (i32.or (i32.eq (local.get $c) (i32.const 32)) (i32.eq (local.get $c) (i32.const 9)))
                                      (i32.or (i32.eq (local.get $c) (i32.const 10)) (i32.eq (local.get $c) (i32.const 13))))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $next)))
    (local.get $p))

  (func $at (param $p i32) (param $end i32) (param $c i32) (result i32)
    ;; 1 if the byte at p is c
    (if (result i32) (i32.lt_u (local.get $p) (local.get $end))
      (then (i32.eq (i32.load8_u (local.get $p)) (local.get $c)))
      (else (i32.const 0))))

  ;; p at an opening quote; returns the position after the closing quote
  (func $skip_string (param $p i32) (param $end i32) (result i32)
    (local $c i32)
    (if (i32.eqz (call $at (local.get $p) (local.get $end) (i32.const 34))) (then (return (i32.const -1))))
    (local.set $p (i32.add (local.get $p) (i32.const 1)))
    (loop $next
      (if (i32.ge_u (local.get $p) (local.get $end)) (then (return (i32.const -1))))
      (local.set $c (i32.load8_u (local.get $p)))
      (local.set $p (i32.add (local.get $p) (i32.const 1)))
      (if (i32.eq (local.get $c) (i32.const 34)) (then (return (local.get $p))))
      (if (i32.lt_u (local.get $c) (i32.const 32)) (then (return (i32.const -1))))
      (if (i32.eq (local.get $c) (i32.const 92)) (then (local.set $p (i32.add (local.get $p) (i32.const 1)))))
      (br $next))
    (i32.const -1))

  ;; any value: a string, a nested object/array (brackets balanced, strings skipped), or a scalar
  (func $skip_value (param $p i32) (param $end i32) (result i32)
    (local $c i32) (local $depth i32) (local $start i32)
    (if (i32.ge_u (local.get $p) (local.get $end)) (then (return (i32.const -1))))
    (local.set $c (i32.load8_u (local.get $p)))
    (if (i32.eq (local.get $c) (i32.const 34)) (then (return (call $skip_string (local.get $p) (local.get $end)))))
    (if (i32.or (i32.eq (local.get $c) (i32.const 123)) (i32.eq (local.get $c) (i32.const 91)))
      (then
        (loop $next
          (if (i32.ge_u (local.get $p) (local.get $end)) (then (return (i32.const -1))))
          (local.set $c (i32.load8_u (local.get $p)))
          (if (i32.eq (local.get $c) (i32.const 34))
            (then
              (local.set $p (call $skip_string (local.get $p) (local.get $end)))
              (if (i32.lt_s (local.get $p) (i32.const 0)) (then (return (i32.const -1))))
              (br $next)))
          (local.set $p (i32.add (local.get $p) (i32.const 1)))
          (if (i32.or (i32.eq (local.get $c) (i32.const 123)) (i32.eq (local.get $c) (i32.const 91)))
            (then (local.set $depth (i32.add (local.get $depth) (i32.const 1)))))
          (if (i32.or (i32.eq (local.get $c) (i32.const 125)) (i32.eq (local.get $c) (i32.const 93)))
            (then
              (local.set $depth (i32.sub (local.get $depth) (i32.const 1)))
              (if (i32.eqz (local.get $depth)) (then (return (local.get $p))))))
          (br $next))))
    ;; scalar: up to the next delimiter
    (local.set $start (local.get $p))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $c (i32.load8_u (local.get $p)))
        (br_if $done (i32.or (i32.or (i32.eq (local.get $c) (i32.const 44)) (i32.eq (local.get $c) (i32.const 125)))
                             (i32.or (i32.eq (local.get $c) (i32.const 93)) (i32.le_u (local.get $c) (i32.const 32)))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $next)))
    (if (result i32) (i32.eq (local.get $p) (local.get $start)) (then (i32.const -1)) (else (local.get $p))))

  (func $equal (param $a i32) (param $alen i32) (param $b i32) (param $blen i32) (result i32)
    (local $i i32)
    (if (i32.ne (local.get $alen) (local.get $blen)) (then (return (i32.const 0))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $alen)))
        (if (i32.ne (i32.load8_u (i32.add (local.get $a) (local.get $i))) (i32.load8_u (i32.add (local.get $b) (local.get $i))))
          (then (return (i32.const 0))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.const 1))

  ;; p + len if the bytes at p are the constant, else -1 (also for p = -1, so checks can chain)
  (func $expect (param $p i32) (param $end i32) (param $k i32) (param $klen i32) (result i32)
    (if (i32.lt_s (local.get $p) (i32.const 0)) (then (return (i32.const -1))))
    (if (i32.gt_s (local.get $klen) (i32.sub (local.get $end) (local.get $p))) (then (return (i32.const -1))))
    (if (result i32) (call $equal (local.get $p) (local.get $klen) (local.get $k) (local.get $klen))
      (then (i32.add (local.get $p) (local.get $klen))) (else (i32.const -1))))

  (func $has_backslash (param $p i32) (param $len i32) (result i32)
    (local $end i32)
    (local.set $end (i32.add (local.get $p) (local.get $len)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (if (i32.eq (i32.load8_u (local.get $p)) (i32.const 92)) (then (return (i32.const 1))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $next)))
    (i32.const 0))

  (func $copy (param $dst i32) (param $src i32) (param $len i32) (result i32)
    (memory.copy (local.get $dst) (local.get $src) (local.get $len))
    (i32.add (local.get $dst) (local.get $len)))

  ;; decimal digits of v (>= 0) at dst; returns the end
  (func $itoa (param $dst i32) (param $v i32) (result i32)
    (local $n i32) (local $t i32)
    (local.set $t (local.get $v))
    (loop $count
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (local.set $t (i32.div_u (local.get $t) (i32.const 10)))
      (br_if $count (local.get $t)))
    (local.set $t (i32.add (local.get $dst) (local.get $n)))
    (loop $digit
      (local.set $t (i32.sub (local.get $t) (i32.const 1)))
      (i32.store8 (local.get $t) (i32.add (i32.const 48) (i32.rem_u (local.get $v) (i32.const 10))))
      (local.set $v (i32.div_u (local.get $v) (i32.const 10)))
      (br_if $digit (local.get $v)))
    (i32.add (local.get $dst) (local.get $n)))

  ;; a non-negative integer at p: value in $num, position returned (-1 if no digits or p = -1)
  (global $num (mut i32) (i32.const 0))
  (func $atoi (param $p i32) (param $end i32) (result i32)
    (local $start i32) (local $c i32)
    (global.set $num (i32.const 0))
    (if (i32.lt_s (local.get $p) (i32.const 0)) (then (return (i32.const -1))))
    (local.set $start (local.get $p))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $c (i32.sub (i32.load8_u (local.get $p)) (i32.const 48)))
        (br_if $done (i32.gt_u (local.get $c) (i32.const 9)))
        (global.set $num (i32.add (i32.mul (global.get $num) (i32.const 10)) (local.get $c)))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $next)))
    (if (result i32) (i32.eq (local.get $p) (local.get $start)) (then (i32.const -1)) (else (local.get $p))))

  (func $bad_input (result i32)
    (drop (call $log (i32.const 4) (i32.const 288) (i32.const 79)))
    (global.get $BAD_INPUT))

  (func (export "handle") (result i32)
    (local $n i32) (local $end i32) (local $p i32) (local $q i32)
    (local $kstart i32) (local $klen i32)
    (local $author i32) (local $author_len i32) (local $text i32) (local $text_len i32) (local $list i32)
    (local $msg i32) (local $msg_len i32) (local $tickets i32) (local $count i32) (local $i i32)
    (local $t i32) (local $r i32) (local $ok i32) (local $attempted i32) (local $succeeded i32)
    (local $sent i32) (local $failed i32) (local $no_devices i32)
    (local.set $author (i32.const -1))
    (local.set $text (i32.const -1))
    (local.set $list (i32.const -1))

    ;; read the input; room for input + message (at most 2n + 64) + tickets (at most 2n + 8)
    (local.set $n (call $input_len))
    (local.set $end (i32.add (global.get $INPUT) (local.get $n)))
    (local.set $q (i32.add (global.get $INPUT) (i32.add (i32.mul (local.get $n) (i32.const 5)) (i32.const 80))))
    (if (i32.gt_u (local.get $q) (i32.mul (memory.size) (i32.const 65536)))
      (then
        (if (i32.lt_s
              (memory.grow (i32.div_u (i32.sub (i32.add (local.get $q) (i32.const 65535)) (i32.mul (memory.size) (i32.const 65536)))
                                      (i32.const 65536)))
              (i32.const 0))
          (then
            (drop (call $log (i32.const 4) (i32.const 512) (i32.const 50)))
            (return (global.get $BAD_INPUT))))))
    (drop (call $input_read (global.get $INPUT) (local.get $n)))

    ;; the top-level object: remember "author", "text" (string insides) and "followers" (the list)
    (local.set $p (call $ws (global.get $INPUT) (local.get $end)))
    (if (i32.eqz (call $at (local.get $p) (local.get $end) (i32.const 123))) (then (return (call $bad_input))))
    (local.set $p (call $ws (i32.add (local.get $p) (i32.const 1)) (local.get $end)))
    (if (call $at (local.get $p) (local.get $end) (i32.const 125)) (then (return (call $bad_input))))
    (loop $member
      (local.set $kstart (i32.add (local.get $p) (i32.const 1)))
      (local.set $q (call $skip_string (local.get $p) (local.get $end)))
      (if (i32.lt_s (local.get $q) (i32.const 0)) (then (return (call $bad_input))))
      (local.set $klen (i32.sub (i32.sub (local.get $q) (i32.const 1)) (local.get $kstart)))
      (local.set $p (call $ws (local.get $q) (local.get $end)))
      (if (i32.eqz (call $at (local.get $p) (local.get $end) (i32.const 58))) (then (return (call $bad_input))))
      (local.set $p (call $ws (i32.add (local.get $p) (i32.const 1)) (local.get $end)))
      (local.set $q (call $skip_value (local.get $p) (local.get $end)))
      (if (i32.lt_s (local.get $q) (i32.const 0)) (then (return (call $bad_input))))
      (if (call $equal (local.get $kstart) (local.get $klen) (i32.const 112) (i32.const 6))
        (then
          (if (i32.eqz (call $at (local.get $p) (local.get $end) (i32.const 34))) (then (return (call $bad_input))))
          (local.set $author (i32.add (local.get $p) (i32.const 1)))
          (local.set $author_len (i32.sub (i32.sub (local.get $q) (i32.const 1)) (local.get $author)))))
      (if (call $equal (local.get $kstart) (local.get $klen) (i32.const 120) (i32.const 4))
        (then
          (if (i32.eqz (call $at (local.get $p) (local.get $end) (i32.const 34))) (then (return (call $bad_input))))
          (local.set $text (i32.add (local.get $p) (i32.const 1)))
          (local.set $text_len (i32.sub (i32.sub (local.get $q) (i32.const 1)) (local.get $text)))))
      (if (call $equal (local.get $kstart) (local.get $klen) (i32.const 128) (i32.const 9))
        (then
          (if (i32.eqz (call $at (local.get $p) (local.get $end) (i32.const 91))) (then (return (call $bad_input))))
          (local.set $list (local.get $p))))
      (local.set $p (call $ws (local.get $q) (local.get $end)))
      (if (call $at (local.get $p) (local.get $end) (i32.const 44))
        (then
          (local.set $p (call $ws (i32.add (local.get $p) (i32.const 1)) (local.get $end)))
          (br $member)))
      (if (i32.eqz (call $at (local.get $p) (local.get $end) (i32.const 125))) (then (return (call $bad_input)))))
    (if (i32.ne (call $ws (i32.add (local.get $p) (i32.const 1)) (local.get $end)) (local.get $end))
      (then (return (call $bad_input))))
    (if (i32.or (i32.or (i32.lt_s (local.get $author) (i32.const 0)) (i32.lt_s (local.get $text) (i32.const 0)))
                (i32.lt_s (local.get $list) (i32.const 0)))
      (then (return (call $bad_input))))

    ;; every follower must be a string: check them all before sending anything
    (local.set $p (call $ws (i32.add (local.get $list) (i32.const 1)) (local.get $end)))
    (if (i32.eqz (call $at (local.get $p) (local.get $end) (i32.const 93)))
      (then
        (loop $check
          (local.set $q (call $skip_string (local.get $p) (local.get $end)))
          (if (i32.lt_s (local.get $q) (i32.const 0)) (then (return (call $bad_input))))
          (local.set $p (call $ws (local.get $q) (local.get $end)))
          (if (call $at (local.get $p) (local.get $end) (i32.const 44))
            (then
              (local.set $p (call $ws (i32.add (local.get $p) (i32.const 1)) (local.get $end)))
              (br $check))))))

    ;; {"title":"<author> posted","body":"<text>","data":{"author":"<author>"}}
    (local.set $msg (local.get $end))
    (local.set $q (call $copy (local.get $msg) (i32.const 16) (i32.const 10)))
    (local.set $q (call $copy (local.get $q) (local.get $author) (local.get $author_len)))
    (local.set $q (call $copy (local.get $q) (i32.const 32) (i32.const 17)))
    (local.set $q (call $copy (local.get $q) (local.get $text) (local.get $text_len)))
    (local.set $q (call $copy (local.get $q) (i32.const 64) (i32.const 20)))
    (local.set $q (call $copy (local.get $q) (local.get $author) (local.get $author_len)))
    (local.set $q (call $copy (local.get $q) (i32.const 96) (i32.const 3)))
    (local.set $msg_len (i32.sub (local.get $q) (local.get $msg)))
    (local.set $tickets (i32.and (i32.add (local.get $q) (i32.const 3)) (i32.const -4)))

    ;; send to every follower first ...
    (local.set $p (call $ws (i32.add (local.get $list) (i32.const 1)) (local.get $end)))
    (if (i32.eqz (call $at (local.get $p) (local.get $end) (i32.const 93)))
      (then
        (loop $each
          (local.set $q (call $skip_string (local.get $p) (local.get $end)))
          (local.set $kstart (i32.add (local.get $p) (i32.const 1)))
          (local.set $klen (i32.sub (i32.sub (local.get $q) (i32.const 1)) (local.get $kstart)))
          (if (call $has_backslash (local.get $kstart) (local.get $klen))
            (then
              (drop (call $log (i32.const 3) (i32.const 448) (i32.const 53)))
              (local.set $t (i32.const -1)))
            (else
              (local.set $t (call $send (local.get $kstart) (local.get $klen) (local.get $msg) (local.get $msg_len)))))
          (i32.store (i32.add (local.get $tickets) (i32.shl (local.get $count) (i32.const 2))) (local.get $t))
          (local.set $count (i32.add (local.get $count) (i32.const 1)))
          (local.set $p (call $ws (local.get $q) (local.get $end)))
          (if (call $at (local.get $p) (local.get $end) (i32.const 44))
            (then
              (local.set $p (call $ws (i32.add (local.get $p) (i32.const 1)) (local.get $end)))
              (br $each))))))

    ;; ... then wait for each and classify its report
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $count)))
        (local.set $t (i32.load (i32.add (local.get $tickets) (i32.shl (local.get $i) (i32.const 2)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (if (i32.lt_s (local.get $t) (i32.const 0))
          (then
            (drop (call $log (i32.const 3) (i32.const 384) (i32.const 18)))
            (local.set $failed (i32.add (local.get $failed) (i32.const 1)))
            (br $next)))
        (local.set $r (call $wait (local.get $t) (global.get $REPORT) (i32.const 256)))
        (if (i32.lt_s (local.get $r) (i32.const 0))
          (then
            (drop (call $log (i32.const 3) (i32.const 416) (i32.const 26)))
            (local.set $failed (i32.add (local.get $failed) (i32.const 1)))
            (br $next)))
        (if (i32.gt_u (local.get $r) (i32.const 256)) (then (local.set $r (i32.const 256))))
        ;; {"ok":true|false,"devices_attempted":N,"devices_succeeded":M ...
        (local.set $end (i32.add (global.get $REPORT) (local.get $r)))
        (local.set $p (call $expect (global.get $REPORT) (local.get $end) (i32.const 144) (i32.const 6)))
        (local.set $ok (call $at (local.get $p) (local.get $end) (i32.const 116)))
        (if (local.get $ok)
          (then (local.set $p (i32.add (local.get $p) (i32.const 4))))
          (else (local.set $p (i32.add (local.get $p) (i32.const 5)))))
        (local.set $p (call $expect (local.get $p) (local.get $end) (i32.const 160) (i32.const 21)))
        (local.set $p (call $atoi (local.get $p) (local.get $end)))
        (local.set $attempted (global.get $num))
        (local.set $p (call $expect (local.get $p) (local.get $end) (i32.const 192) (i32.const 21)))
        (local.set $p (call $atoi (local.get $p) (local.get $end)))
        (local.set $succeeded (global.get $num))
        (if (i32.lt_s (local.get $p) (i32.const 0))
          (then
            (drop (call $log (i32.const 3) (i32.const 416) (i32.const 26)))
            (local.set $failed (i32.add (local.get $failed) (i32.const 1)))
            (br $next)))
        (if (i32.eqz (local.get $attempted))
          (then (local.set $no_devices (i32.add (local.get $no_devices) (i32.const 1))))
          (else
            (if (i32.and (local.get $ok) (i32.gt_u (local.get $succeeded) (i32.const 0)))
              (then (local.set $sent (i32.add (local.get $sent) (i32.const 1))))
              (else (local.set $failed (i32.add (local.get $failed) (i32.const 1)))))))
        (br $next)))

    ;; {"sent":n,"failed":m,"no_devices":k}
    (local.set $q (call $copy (global.get $OUT) (i32.const 224) (i32.const 8)))
    (local.set $q (call $itoa (local.get $q) (local.get $sent)))
    (local.set $q (call $copy (local.get $q) (i32.const 240) (i32.const 10)))
    (local.set $q (call $itoa (local.get $q) (local.get $failed)))
    (local.set $q (call $copy (local.get $q) (i32.const 256) (i32.const 14)))
    (local.set $q (call $itoa (local.get $q) (local.get $no_devices)))
    (local.set $q (call $copy (local.get $q) (i32.const 272) (i32.const 1)))
    (drop (call $output_write (global.get $OUT) (i32.sub (local.get $q) (global.get $OUT))))
    (i32.const 0)))
