;; loop — spins forever; must end as out_of_fuel or timeout, never hang the host.
(module
  (memory (export "memory") 1)
  (func (export "handle") (result i32)
    (loop $forever (br $forever))
    (i32.const 0)))
