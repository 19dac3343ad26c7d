;; welcome — the same function as welcome.c, by hand in WAT (ABI v1, no WASI).
;;
;; input:  {"user": "alice", "name": "Alice"}   ("name" is optional; defaults to the user id)
;; output: welcomed alice: 2/2 devices
;; return: 0 ok, 1 bad input, 2 send not accepted, 3 wait failed
;;
;; JSON handling is minimal but correct: top-level members are found by walking the object
;; (nested values and strings are skipped, so a "user" inside a value never matches). The name is
;; copied in its JSON-escaped form, so it stays correctly escaped inside the message. User ids
;; containing backslash escapes are rejected (logged, return 1) rather than decoded.
(module
  (import "wasmhost" "input_len" (func $input_len (result i32)))
  (import "wasmhost" "input_read" (func $input_read (param i32 i32) (result i32)))
  (import "wasmhost" "output_write" (func $output_write (param i32 i32) (result i32)))
  (import "wasmhost" "log" (func $log (param i32 i32 i32) (result i32)))
  (import "wasmhost" "push_send_to_user" (func $send (param i32 i32 i32 i32) (result i32)))
  (import "wasmhost" "push_wait" (func $wait (param i32 i32 i32) (result i32)))

  (memory (export "memory") 1)

  ;; constant strings (offset, length)
  (data (i32.const 0) "user")                                   ;; 0, 4
  (data (i32.const 8) "name")                                   ;; 8, 4
  (data (i32.const 16) "{\"title\":\"Welcome, ")               ;; 16, 19
  (data (i32.const 48) "!\",\"body\":\"Thanks for joining, ")  ;; 48, 31
  (data (i32.const 96) ". You're all set.\",\"data\":{\"kind\":\"welcome\"}}") ;; 96, 45
  (data (i32.const 160) "\"devices_attempted\":")             ;; 160, 20
  (data (i32.const 192) "\"devices_succeeded\":")             ;; 192, 20
  (data (i32.const 224) "welcomed ")                           ;; 224, 9
  (data (i32.const 240) " devices")                            ;; 240, 8
  (data (i32.const 256) "input must be a JSON object with a non-empty string \"user\" (and optional \"name\")") ;; 256, 80
  (data (i32.const 352) "user ids with escapes are not supported") ;; 352, 39
  (data (i32.const 400) "name is too long")                    ;; 400, 16
  (data (i32.const 432) "push_send_to_user failed")            ;; 432, 24
  (data (i32.const 464) "push_wait failed")                    ;; 464, 16
  (data (i32.const 496) "input is larger than 4 KiB")          ;; 496, 26

  ;; buffers
  (global $IN i32 (i32.const 4096))      ;; input, 4096
  (global $MSG i32 (i32.const 10240))    ;; message, 2048
  (global $REPORT i32 (i32.const 12288)) ;; report, 1024
  (global $LINE i32 (i32.const 13312))   ;; output line, 1024
  (global $in_end (mut i32) (i32.const 0))

  (func $is_ws (param $c i32) (result i32)
    (i32.or (i32.or (i32.eq (local.get $c) (i32.const 32)) (i32.eq (local.get $c) (i32.const 9)))
            (i32.or (i32.eq (local.get $c) (i32.const 10)) (i32.eq (local.get $c) (i32.const 13)))))

  (func $ws (param $p i32) (result i32)
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $p) (global.get $in_end)))
        (br_if $done (i32.eqz (call $is_ws (i32.load8_u (local.get $p)))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $l)))
    (local.get $p))

  ;; $p at '"'; returns the position after the closing quote, or -1.
  (func $skip_string (param $p i32) (result i32) (local $c i32)
    (if (i32.ge_u (local.get $p) (global.get $in_end)) (then (return (i32.const -1))))
    (if (i32.ne (i32.load8_u (local.get $p)) (i32.const 34)) (then (return (i32.const -1))))
    (local.set $p (i32.add (local.get $p) (i32.const 1)))
    (loop $l
      (if (i32.ge_u (local.get $p) (global.get $in_end)) (then (return (i32.const -1))))
      (local.set $c (i32.load8_u (local.get $p)))
      (local.set $p (i32.add (local.get $p) (i32.const 1)))
      (if (i32.eq (local.get $c) (i32.const 34)) (then (return (local.get $p))))
      (if (i32.lt_u (local.get $c) (i32.const 32)) (then (return (i32.const -1))))
      (if (i32.eq (local.get $c) (i32.const 92))
        (then (local.set $p (i32.add (local.get $p) (i32.const 1)))))
      (br $l))
    (i32.const -1))

  ;; Skip any value at $p; returns the position after it, or -1.
  (func $skip_value (param $p i32) (result i32) (local $c i32) (local $depth i32) (local $start i32)
    (if (i32.ge_u (local.get $p) (global.get $in_end)) (then (return (i32.const -1))))
    (local.set $c (i32.load8_u (local.get $p)))
    (if (i32.eq (local.get $c) (i32.const 34)) (then (return (call $skip_string (local.get $p)))))
    (if (i32.or (i32.eq (local.get $c) (i32.const 123)) (i32.eq (local.get $c) (i32.const 91)))
      (then
        (loop $l
          (if (i32.ge_u (local.get $p) (global.get $in_end)) (then (return (i32.const -1))))
          (local.set $c (i32.load8_u (local.get $p)))
          (if (i32.eq (local.get $c) (i32.const 34))
            (then
              (local.set $p (call $skip_string (local.get $p)))
              (if (i32.lt_s (local.get $p) (i32.const 0)) (then (return (i32.const -1))))
              (br $l)))
          (local.set $p (i32.add (local.get $p) (i32.const 1)))
          (if (i32.or (i32.eq (local.get $c) (i32.const 123)) (i32.eq (local.get $c) (i32.const 91)))
            (then (local.set $depth (i32.add (local.get $depth) (i32.const 1)))))
          (if (i32.or (i32.eq (local.get $c) (i32.const 125)) (i32.eq (local.get $c) (i32.const 93)))
            (then
              (local.set $depth (i32.sub (local.get $depth) (i32.const 1)))
              (if (i32.eqz (local.get $depth)) (then (return (local.get $p))))))
          (br $l))))
    ;; number / true / false / null: up to a delimiter
    (local.set $start (local.get $p))
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $p) (global.get $in_end)))
        (local.set $c (i32.load8_u (local.get $p)))
        (br_if $done (i32.or (call $is_ws (local.get $c))
                             (i32.or (i32.eq (local.get $c) (i32.const 44))
                                     (i32.or (i32.eq (local.get $c) (i32.const 125)) (i32.eq (local.get $c) (i32.const 93))))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $l)))
    (if (result i32) (i32.eq (local.get $p) (local.get $start)) (then (i32.const -1)) (else (local.get $p))))

  (func $eq (param $a i32) (param $b i32) (param $n i32) (result i32)
    (block $no
      (loop $l
        (if (i32.eqz (local.get $n)) (then (return (i32.const 1))))
        (br_if $no (i32.ne (i32.load8_u (local.get $a)) (i32.load8_u (local.get $b))))
        (local.set $a (i32.add (local.get $a) (i32.const 1)))
        (local.set $b (i32.add (local.get $b) (i32.const 1)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $l)))
    (i32.const 0))

  ;; Position of the value of top-level member $key, -1 if absent, -2 if the input is not exactly
  ;; one well-formed object (checked to the end, even past the key).
  (func $find (param $key i32) (param $klen i32) (result i32) (local $p i32) (local $k i32) (local $found i32)
    (local.set $found (i32.const -1))
    (local.set $p (call $ws (global.get $IN)))
    (if (i32.ge_u (local.get $p) (global.get $in_end)) (then (return (i32.const -2))))
    (if (i32.ne (i32.load8_u (local.get $p)) (i32.const 123)) (then (return (i32.const -2))))
    (local.set $p (call $ws (i32.add (local.get $p) (i32.const 1))))
    (if (i32.and (i32.lt_u (local.get $p) (global.get $in_end)) (i32.eq (i32.load8_u (local.get $p)) (i32.const 125)))
      (then (return (select (i32.const -1) (i32.const -2)
                            (i32.eq (call $ws (i32.add (local.get $p) (i32.const 1))) (global.get $in_end))))))
    (loop $member
      (local.set $k (i32.add (local.get $p) (i32.const 1)))
      (local.set $p (call $skip_string (local.get $p)))
      (if (i32.lt_s (local.get $p) (i32.const 0)) (then (return (i32.const -2))))
      ;; raw key bytes are [$k, $p - 1)
      (if (i32.and (i32.lt_s (local.get $found) (i32.const 0))
                   (i32.and (i32.eq (i32.sub (i32.sub (local.get $p) (i32.const 1)) (local.get $k)) (local.get $klen))
                            (call $eq (local.get $k) (local.get $key) (local.get $klen))))
        (then (local.set $found (i32.const 0))))  ;; 0: matched; becomes the value's position below
      (local.set $p (call $ws (local.get $p)))
      (if (i32.ge_u (local.get $p) (global.get $in_end)) (then (return (i32.const -2))))
      (if (i32.ne (i32.load8_u (local.get $p)) (i32.const 58)) (then (return (i32.const -2))))
      (local.set $p (call $ws (i32.add (local.get $p) (i32.const 1))))
      (if (i32.eqz (local.get $found)) (then (local.set $found (local.get $p))))
      (local.set $p (call $skip_value (local.get $p)))
      (if (i32.lt_s (local.get $p) (i32.const 0)) (then (return (i32.const -2))))
      (local.set $p (call $ws (local.get $p)))
      (if (i32.ge_u (local.get $p) (global.get $in_end)) (then (return (i32.const -2))))
      (if (i32.eq (i32.load8_u (local.get $p)) (i32.const 125))
        (then
          (if (i32.ne (call $ws (i32.add (local.get $p) (i32.const 1))) (global.get $in_end))
            (then (return (i32.const -2))))  ;; trailing garbage
          (return (local.get $found))))
      (if (i32.ne (i32.load8_u (local.get $p)) (i32.const 44)) (then (return (i32.const -2))))
      (local.set $p (call $ws (i32.add (local.get $p) (i32.const 1))))
      (br $member))
    (i32.const -2))

  ;; Copy $n bytes to $dst; return $dst + $n.
  (func $put (param $dst i32) (param $src i32) (param $n i32) (result i32)
    (memory.copy (local.get $dst) (local.get $src) (local.get $n))
    (i32.add (local.get $dst) (local.get $n)))

  ;; Decimal of a non-negative $v at $dst; return the end.
  (func $itoa (param $dst i32) (param $v i32) (result i32) (local $n i32) (local $t i32) (local $i i32)
    (local.set $t (local.get $v))
    (loop $count
      (local.set $n (i32.add (local.get $n) (i32.const 1)))
      (local.set $t (i32.div_u (local.get $t) (i32.const 10)))
      (br_if $count (local.get $t)))
    (local.set $i (local.get $n))
    (loop $digits
      (local.set $i (i32.sub (local.get $i) (i32.const 1)))
      (i32.store8 (i32.add (local.get $dst) (local.get $i))
                  (i32.add (i32.const 48) (i32.rem_u (local.get $v) (i32.const 10))))
      (local.set $v (i32.div_u (local.get $v) (i32.const 10)))
      (br_if $digits (local.get $i)))
    (i32.add (local.get $dst) (local.get $n)))

  ;; The integer after pattern [$pat, $pat+20) in [$hay, $hay+$len), or -1. The host writes the
  ;; report compactly with the counts before "results", so the first occurrence is the top-level one.
  (func $find_int (param $hay i32) (param $len i32) (param $pat i32) (result i32) (local $i i32) (local $v i32) (local $c i32) (local $any i32)
    (block $notfound
      (loop $scan
        (br_if $notfound (i32.gt_s (i32.add (local.get $i) (i32.const 20)) (local.get $len)))
        (if (call $eq (i32.add (local.get $hay) (local.get $i)) (local.get $pat) (i32.const 20))
          (then
            (local.set $i (i32.add (local.get $i) (i32.const 20)))
            (block $end
              (loop $d
                (br_if $end (i32.ge_s (local.get $i) (local.get $len)))
                (local.set $c (i32.sub (i32.load8_u (i32.add (local.get $hay) (local.get $i))) (i32.const 48)))
                (br_if $end (i32.gt_u (local.get $c) (i32.const 9)))
                (local.set $v (i32.add (i32.mul (local.get $v) (i32.const 10)) (local.get $c)))
                (local.set $any (i32.const 1))
                (local.set $i (i32.add (local.get $i) (i32.const 1)))
                (br $d)))
            (return (select (local.get $v) (i32.const -1) (local.get $any)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $scan)))
    (i32.const -1))

  (func $fail (param $rc i32) (param $msg i32) (param $len i32) (result i32)
    (drop (call $log (i32.const 4) (local.get $msg) (local.get $len)))
    (local.get $rc))

  (func (export "handle") (result i32)
    (local $n i32) (local $u i32) (local $uend i32) (local $ulen i32)
    (local $nm i32) (local $nend i32) (local $nlen i32) (local $q i32)
    (local $ticket i32) (local $rlen i32) (local $p i32)
    (local.set $n (call $input_len))
    (if (i32.gt_u (local.get $n) (i32.const 4096)) (then (return (call $fail (i32.const 1) (i32.const 496) (i32.const 26)))))
    (drop (call $input_read (global.get $IN) (i32.const 4096)))
    (global.set $in_end (i32.add (global.get $IN) (local.get $n)))

    ;; user: a non-empty string without escapes
    (local.set $u (call $find (i32.const 0) (i32.const 4)))
    (if (i32.lt_s (local.get $u) (i32.const 0)) (then (return (call $fail (i32.const 1) (i32.const 256) (i32.const 80)))))
    (local.set $uend (call $skip_string (local.get $u)))
    (if (i32.lt_s (local.get $uend) (i32.const 0)) (then (return (call $fail (i32.const 1) (i32.const 256) (i32.const 80)))))
    (local.set $u (i32.add (local.get $u) (i32.const 1)))
    (local.set $ulen (i32.sub (i32.sub (local.get $uend) (i32.const 1)) (local.get $u)))
    (if (i32.eqz (local.get $ulen)) (then (return (call $fail (i32.const 1) (i32.const 256) (i32.const 80)))))
    (local.set $q (local.get $u))
    (loop $chk
      (if (i32.lt_u (local.get $q) (i32.add (local.get $u) (local.get $ulen)))
        (then
          (if (i32.eq (i32.load8_u (local.get $q)) (i32.const 92))
            (then (return (call $fail (i32.const 1) (i32.const 352) (i32.const 39)))))
          (local.set $q (i32.add (local.get $q) (i32.const 1)))
          (br $chk))))

    ;; name: optional string, kept JSON-escaped; defaults to the user id
    (local.set $nm (call $find (i32.const 8) (i32.const 4)))
    (if (i32.eq (local.get $nm) (i32.const -2)) (then (return (call $fail (i32.const 1) (i32.const 256) (i32.const 80)))))
    (if (i32.ge_s (local.get $nm) (i32.const 0))
      (then (local.set $nend (call $skip_string (local.get $nm)))))
    (if (i32.or (i32.lt_s (local.get $nm) (i32.const 0)) (i32.lt_s (local.get $nend) (i32.const 0)))
      (then (local.set $nm (local.get $u)) (local.set $nlen (local.get $ulen)))
      (else
        (local.set $nm (i32.add (local.get $nm) (i32.const 1)))
        (local.set $nlen (i32.sub (i32.sub (local.get $nend) (i32.const 1)) (local.get $nm)))))
    (if (i32.eqz (local.get $nlen)) (then (local.set $nm (local.get $u)) (local.set $nlen (local.get $ulen))))
    (if (i32.gt_u (local.get $nlen) (i32.const 255)) (then (return (call $fail (i32.const 1) (i32.const 400) (i32.const 16)))))

    ;; message
    (local.set $p (call $put (global.get $MSG) (i32.const 16) (i32.const 19)))
    (local.set $p (call $put (local.get $p) (local.get $nm) (local.get $nlen)))
    (local.set $p (call $put (local.get $p) (i32.const 48) (i32.const 31)))
    (local.set $p (call $put (local.get $p) (local.get $nm) (local.get $nlen)))
    (local.set $p (call $put (local.get $p) (i32.const 96) (i32.const 45)))

    (local.set $ticket (call $send (local.get $u) (local.get $ulen) (global.get $MSG) (i32.sub (local.get $p) (global.get $MSG))))
    (if (i32.lt_s (local.get $ticket) (i32.const 0)) (then (return (call $fail (i32.const 2) (i32.const 432) (i32.const 24)))))
    (local.set $rlen (call $wait (local.get $ticket) (global.get $REPORT) (i32.const 1024)))
    (if (i32.lt_s (local.get $rlen) (i32.const 0)) (then (return (call $fail (i32.const 3) (i32.const 464) (i32.const 16)))))
    (if (i32.gt_u (local.get $rlen) (i32.const 1024)) (then (local.set $rlen (i32.const 1024))))

    ;; "welcomed <user>: <succeeded>/<attempted> devices"
    (local.set $p (call $put (global.get $LINE) (i32.const 224) (i32.const 9)))
    (local.set $p (call $put (local.get $p) (local.get $u) (local.get $ulen)))
    (i32.store16 (local.get $p) (i32.const 0x203a)) ;; ": "
    (local.set $p (i32.add (local.get $p) (i32.const 2)))
    (local.set $p (call $itoa (local.get $p) (call $find_int (global.get $REPORT) (local.get $rlen) (i32.const 192))))
    (i32.store8 (local.get $p) (i32.const 47)) ;; "/"
    (local.set $p (i32.add (local.get $p) (i32.const 1)))
    (local.set $p (call $itoa (local.get $p) (call $find_int (global.get $REPORT) (local.get $rlen) (i32.const 160))))
    (local.set $p (call $put (local.get $p) (i32.const 240) (i32.const 8)))
    (drop (call $output_write (global.get $LINE) (i32.sub (local.get $p) (global.get $LINE))))
    (i32.const 0)))
