"""Entry point of the compile fork server (``python -m wasmhost.runtime._forkserver FD``); see `compiler`."""

import socket
import sys

import wasmtime  # noqa: F401  (imported once here, inherited by every compiler child)

from .compiler import serve

serve(socket.socket(fileno=int(sys.argv[1])))
