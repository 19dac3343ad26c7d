"""A componentize-py probe for the sandbox tests: runs a list of ops from the input, logs results.

ops: ["send", user, message] -> code | ["wait", ticket] -> devices_attempted or code |
["output", n] -> code | ["log", lines, size] -> last code | ["spin"] | ["alloc", mb] -> "ok"/"failed"
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import host


class WitWorld(wit_world.WitWorld):
    def handle(self) -> int:
        results = []
        for op in json.loads(host.input()):
            name = op[0]
            if name == "send":
                results.append(host.push_send_to_user(op[1], op[2]))
            elif name == "wait":
                try:
                    results.append(json.loads(host.push_wait(op[1]))["devices_attempted"])
                except Err as err:
                    results.append(err.value)
            elif name == "output":
                results.append(host.output_write("x" * op[1]))
            elif name == "log":
                code = 0
                for _ in range(op[1]):
                    code = host.log(host.Level.INFO, "y" * op[2])
                results.append(code)
            elif name == "spin":
                n = 0
                while True:
                    n += 1
            elif name == "alloc":
                try:
                    block = bytearray(op[1] << 20)
                    block[-1] = 1
                    results.append("ok")
                except MemoryError:
                    results.append("failed")
        host.log(host.Level.NOTICE, "results " + json.dumps(results))
        return 0
