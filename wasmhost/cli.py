"""The `wasmhost` command: demo, run, send, sends, devices, credentials, outbox, namespaces, serve.

Every command opens the state named by ``--db`` / ``WASMHOST_DB`` (default ``sqlite:///./wasmhost.db``);
``--db`` may be given before or after the command. Bad input ends with one line on stderr and a non-zero
exit, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from ._env import env_str
from .push import MessageError, PushError, parse_message
from .push.credentials import CredentialsError, require_configured, validate_credentials, validate_device_token
from .runtime import InvalidModule, Limits
from .services import Services, Settings
from .store import DEFAULT_DB_URL, NotFound, StoreError

__all__ = ["main"]

EXIT_FAILED = 1


class CLIError(Exception):
    """A one-line error for the user."""


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=None, ensure_ascii=False))


async def _require_namespace(services: Services, namespace: str) -> None:
    if not await services.store.namespace_exists(namespace):
        raise CLIError(f"unknown namespace {namespace!r} (create it with: wasmhost namespace create {namespace})")


def _gateway_config() -> Any:
    """The gateway's operator settings, so `run` refuses what a deploy would (``WASMHOST_MAX_*`` raise them)."""
    from .gateway.config import GatewayConfig

    return GatewayConfig.from_env()


def _read_module(path: str, max_bytes: int) -> bytes | str:
    file = Path(path)
    if not file.is_file():
        raise CLIError(f"module file not found: {path}")
    size = file.stat().st_size
    if size > max_bytes:
        raise CLIError(f"{path} is {size:,} bytes, over the gateway's module limit of {max_bytes:,} bytes "
                       "(WASMHOST_MAX_MODULE_BYTES); a deploy would be refused with 413")
    data = file.read_bytes()
    if file.suffix == ".wat":
        return data.decode("utf-8", "replace")
    return data


def _read_input(args: argparse.Namespace, max_bytes: int) -> bytes:
    if args.input is not None and args.input_file is not None:
        raise CLIError("give --input or --input-file, not both")
    if args.input_file is not None:
        path = Path(args.input_file)
        if not path.is_file():
            raise CLIError(f"input file not found: {args.input_file}")
        size = path.stat().st_size
        if size > max_bytes:
            raise CLIError(f"{args.input_file} is {size:,} bytes, over the gateway's input limit of {max_bytes:,} "
                           "bytes (WASMHOST_MAX_INPUT_BYTES)")
        return path.read_bytes()
    if args.input is None:
        return b""
    try:
        json.loads(args.input)
    except json.JSONDecodeError as exc:
        raise CLIError(f"--input is not valid JSON: {exc.msg} at position {exc.pos} "
                       "(for raw bytes or any other format, use --input-file)") from None
    data: bytes = args.input.encode()
    if len(data) > max_bytes:
        raise CLIError(f"--input is {len(data):,} bytes, over the gateway's input limit of {max_bytes:,} bytes "
                       "(WASMHOST_MAX_INPUT_BYTES)")
    return data


# -- commands ------------------------------------------------------------------------------------


#: `run`'s limit flags: each is a field of `Limits`, bounded by the same platform maxima as a deploy.
RUN_LIMITS = ("fuel", "timeout_ms", "memory_mb", "max_output_bytes", "max_log_lines", "max_log_line_bytes",
              "max_sends")


async def cmd_run(services: Services, args: argparse.Namespace) -> int:
    await _require_namespace(services, args.namespace)
    config = _gateway_config()
    source = _read_module(args.module, config.max_module_bytes)
    payload = _read_input(args, config.max_input_bytes)
    changes = {name: getattr(args, name) for name in RUN_LIMITS if getattr(args, name) is not None}
    limits = Limits().replace(**changes)
    module = await services.runtime.compile_async(source, namespace=args.namespace)
    initial = getattr(module, "memory_min_bytes", 0)
    if initial > limits.memory_bytes:
        raise CLIError(f"the module's memory starts at {initial >> 20} MiB, over memory_mb={limits.memory_mb}; "
                       "raise --memory-mb or shrink the module's initial memory (a deploy would be refused too)")
    result = await services.runtime.invoke(args.namespace, module, payload, limits)
    doc = result.to_dict()
    if args.json:
        _print_json(doc)
    else:
        if doc["output"]:
            print(doc["output"].rstrip("\n"))
        for entry in doc["logs"]:
            print(f"[{entry['level']}] {entry['message']}", file=sys.stderr)
        if not result.ok:
            err = doc["error"]
            why = f"{err['kind']}: {err['message']}" if err else f"handle returned {doc['code']}"
            print(f"wasmhost: invocation failed: {why}", file=sys.stderr)
    return 0 if result.ok else EXIT_FAILED


async def cmd_namespace_create(services: Services, args: argparse.Namespace) -> int:
    if await services.store.namespace_exists(args.name):
        hint = f"; to turn the outbox on: wasmhost credentials set --namespace {args.name} outbox --json '{{}}'"
        raise CLIError(f"namespace {args.name!r} already exists" + (hint if args.outbox else ""))
    await services.store.create_namespace(args.name)
    if args.outbox:
        await services.store.put_credentials(args.name, "outbox", {})
    print(f"created namespace {args.name}" + (" (outbox provider on)" if args.outbox else ""))
    return 0


async def cmd_namespace_list(services: Services, args: argparse.Namespace) -> int:
    names = await services.store.list_namespaces()
    if args.json:
        _print_json(names)
    else:
        print("\n".join(names) if names else "(no namespaces)")
    return 0


async def cmd_device_add(services: Services, args: argparse.Namespace) -> int:
    await _require_namespace(services, args.namespace)
    spec = _spec(services, args.provider)
    require_configured(args.namespace, args.provider, await services.manager.configured_providers(args.namespace))
    document = await services.store.get_credentials(args.namespace, args.provider)
    token = await validate_device_token(spec, args.token, document)
    device = await services.store.register_device(
        args.namespace, args.user, args.device_id or args.provider, args.provider, token, args.platform or "", ""
    )
    services.manager.invalidate(args.namespace)
    print(f"registered device {device.device_id} ({device.provider}) for {args.user}: id {device.id}")
    return 0


async def cmd_device_list(services: Services, args: argparse.Namespace) -> int:
    await _require_namespace(services, args.namespace)
    devices = [d.public() for d in await services.store.list_user_devices(args.namespace, args.user)]
    if args.json:
        _print_json(devices)
    elif not devices:
        print(f"(no devices for {args.user})")
    else:
        for d in devices:
            print(f"{d['id']}  {d['device_id']:<16} {d['provider']:<10} {d['platform']}")
    return 0


async def cmd_device_remove(services: Services, args: argparse.Namespace) -> int:
    await _require_namespace(services, args.namespace)
    await services.store.delete_device(args.namespace, args.id, user_id=args.user)
    print(f"removed device {args.id}")
    return 0


def _spec(services: Services, provider: str) -> Any:
    spec = services.specs.get(provider)
    if spec is None:
        raise CLIError(f"unsupported provider {provider!r} (supported: {', '.join(sorted(services.specs))})")
    return spec


def _credentials_document(args: argparse.Namespace) -> dict[str, Any]:
    if (args.file is None) == (args.json_doc is None):
        raise CLIError("give the provider's credentials document with --file PATH or --json DOC (one of them)")
    if args.file is not None:
        path = Path(args.file)
        if not path.is_file():
            raise CLIError(f"credentials file not found: {args.file}")
        text, where = path.read_text("utf-8", "replace"), args.file
    else:
        text, where = args.json_doc, "--json"
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CLIError(f"{where} is not valid JSON: {exc.msg} at position {exc.pos}") from None
    if not isinstance(document, dict):
        raise CLIError(f"{where} must be a JSON object (the provider's credentials document; {{}} for outbox)")
    return document


async def cmd_credentials_set(services: Services, args: argparse.Namespace) -> int:
    """The same validation and redaction as PUT /v1/namespace/push-credentials/{provider}."""
    await _require_namespace(services, args.namespace)
    spec = _spec(services, args.provider)
    document = _credentials_document(args)
    try:
        normalized = await validate_credentials(spec, document)
    except CredentialsError as exc:
        raise CLIError(f"credential validation failed: {exc}") from None
    await services.store.put_credentials(args.namespace, args.provider, normalized)
    services.manager.invalidate(args.namespace)
    redacted = json.dumps(spec.redact(normalized), ensure_ascii=False)
    print(f"configured {args.provider} for {args.namespace}: {redacted}")
    return 0


async def cmd_credentials_list(services: Services, args: argparse.Namespace) -> int:
    await _require_namespace(services, args.namespace)
    stored = await services.store.all_credentials(args.namespace)
    configured = {name: _spec(services, name).redact(doc) for name, doc in sorted(stored.items())
                  if name in services.specs}
    if args.json:
        _print_json({"namespace": args.namespace, "configured": configured, "supported": sorted(services.specs)})
    elif not configured:
        print(f"(no credentials in {args.namespace}; supported: {', '.join(sorted(services.specs))})")
    else:
        for name, redacted in configured.items():
            print(f"{name:<10} {json.dumps(redacted, ensure_ascii=False)}")
    return 0


async def cmd_credentials_remove(services: Services, args: argparse.Namespace) -> int:
    await _require_namespace(services, args.namespace)
    _spec(services, args.provider)
    await services.store.delete_credentials(args.namespace, args.provider)
    services.manager.invalidate(args.namespace)
    print(f"removed {args.provider} credentials from {args.namespace}")
    return 0


async def cmd_send(services: Services, args: argparse.Namespace) -> int:
    await _require_namespace(services, args.namespace)
    doc: dict[str, Any] = {"title": args.title, "body": args.body}
    if args.data is not None:
        try:
            doc["data"] = json.loads(args.data)
        except json.JSONDecodeError as exc:
            raise CLIError(f"--data is not valid JSON: {exc.msg}") from None
    if args.priority:
        doc["priority"] = args.priority
    message = parse_message(json.dumps({k: v for k, v in doc.items() if v is not None}))
    report = await services.manager.send_to_user(args.namespace, args.user, message)
    if args.json:
        _print_json(report.to_dict())
    else:
        print(_format_report(report.to_dict()))
    return 0 if report.ok else EXIT_FAILED


async def cmd_outbox(services: Services, args: argparse.Namespace) -> int:
    await _require_namespace(services, args.namespace)
    records = [r.to_dict() for r in await services.store.list_deliveries(args.namespace, limit=args.limit)]
    if args.json:
        _print_json(records)
    elif not records:
        print("(nothing delivered)")
    else:
        for r in records:
            print(f"#{r['id']}  to {r['user']}/{r['device_id']}: {json.dumps(r['message'], ensure_ascii=False)}")
    return 0


async def cmd_sends(services: Services, args: argparse.Namespace) -> int:
    """`sends list` (newest first) or `sends show SEND_ID`: each device's state, attempts and last error."""
    from .store.sql import SQLStore

    await _require_namespace(services, args.namespace)
    store = services.store
    if not isinstance(store, SQLStore):  # pragma: no cover - every store is an SQLStore today
        raise CLIError("this store keeps no sends")
    if args.action == "show":
        sends = [await store.get_send(args.namespace, args.send_id)]
    else:
        sends = await store.list_sends(args.namespace, user_id=args.user or "", state=args.state or "",
                                       limit=args.limit)
    if args.json:
        _print_json(sends[0].to_dict() if args.action == "show" else [s.to_dict() for s in sends])
        return 0
    if not sends:
        print("(no sends)")
    for s in sends:
        counts = ", ".join(f"{n} {state}" for state, n in s.counts().items() if n)
        print(f"{s.id}  to {s.user_id}: {s.state} ({counts or 'no devices'})")
        if args.action == "show":
            for d in s.deliveries:
                why = f"  {d.reason}: {d.error}" if d.reason or d.error else ""
                print(f"  {d.device_id} ({d.provider}): {d.state}, {d.attempts} attempt(s){why}")
    return 0


async def cmd_check(services: Services, args: argparse.Namespace) -> int:
    from .store.check import check_store
    from .store.sql import SQLStore

    if not isinstance(services.store, SQLStore):  # pragma: no cover - every store is an SQLStore today
        raise CLIError("this store has no consistency checks")
    problems = await check_store(services.store)
    for line in problems:
        print(line)
    print(f"{len(problems)} problem(s) found" if problems else "ok: the store is consistent")
    return EXIT_FAILED if problems else 0


async def cmd_keys_rotate(args: argparse.Namespace) -> int:
    from .store import load_keyring, open_store, state_dir_for
    from .store.rotation import rotate_keys
    from .store.url import DB_ENV

    url = args.db or env_str(DB_ENV, DEFAULT_DB_URL)
    keyring = load_keyring(state_dir_for(url))
    store = await open_store(url, keyring)
    try:
        report = await rotate_keys(store, keyring)
    finally:
        await store.aclose()
    doc = report.to_dict()
    if args.json:
        _print_json(doc)
    else:
        print(f"master key version {doc['key_version']}: re-sealed {doc['resealed']}, already current "
              f"{doc['already_current']}, unreadable {doc['unreadable']}, remaining {doc['remaining']} — "
              + ("complete" if doc["complete"] else "NOT complete: run it again (see docs/fleet.md)"))
    return 0 if report.complete else EXIT_FAILED


def cmd_keys_generate(args: argparse.Namespace) -> int:
    print(secrets.token_bytes(32).hex())
    return 0


def cmd_new(args: argparse.Namespace) -> int:
    from .scaffold import ScaffoldError, scaffold

    directory = Path(args.dir or args.name)
    try:
        scaffold(args.language, args.name, directory)
    except ScaffoldError as exc:
        raise CLIError(str(exc)) from None
    print(f"created {directory}/ ({args.language}): build with ./build.sh, then see its README.md")
    return 0


def _format_report(report: dict[str, Any]) -> str:
    lines = [f"{report['devices_succeeded']}/{report['devices_attempted']} devices succeeded"
             + ("" if report["ok"] else " (some failed)")]
    for r in report["results"]:
        outcome = "delivered" if r["success"] else f"FAILED {r['reason']}: {r['message']}"
        lines.append(f"  {r['device_id']:<12} {r['provider']:<10} status {r['status']:<4} "
                     f"attempts {r['attempts']}  {outcome}")
    return "\n".join(lines)


# -- parser --------------------------------------------------------------------------------------

Handler = Callable[[Services, argparse.Namespace], Awaitable[int]]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wasmhost", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"wasmhost {__version__}")
    parser.add_argument("--db", help="state URL: sqlite:///path or postgresql://… (default: $WASMHOST_DB or "
                        "sqlite:///./wasmhost.db)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="run the whole story once on a fresh embedded state folder")
    demo.add_argument("--state", help="state folder to use (default: a new temporary folder)")

    from .scaffold import LANGUAGES

    new = sub.add_parser("new", help="start a function project: SDK, source, build script, sample input, README")
    new.add_argument("language", choices=list(LANGUAGES))
    new.add_argument("name", help="the function's name (letters, digits, '-', '_'), also its folder")
    new.add_argument("--dir", help="where to create it (default: ./NAME)")

    run = sub.add_parser("run", help="invoke a module once in a namespace")
    run.add_argument("module", help=".wasm or .wat file")
    run.add_argument("--namespace", required=True)
    run.add_argument("--input", help="the input, as JSON text (checked); for raw bytes use --input-file")
    run.add_argument("--input-file", help="file whose bytes are the input, unchanged (any format)")
    for name in RUN_LIMITS:
        run.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, metavar="N",
                         help=f"limit {name} (default {getattr(Limits(), name):,}, "
                              f"at most {Limits.MAXIMA[name]:,})")
    run.add_argument("--json", action="store_true", help="print the invocation result as one JSON object")
    run.set_defaults(handler=cmd_run)

    ns = sub.add_parser("namespace", help="manage namespaces").add_subparsers(dest="action", required=True)
    create = ns.add_parser("create", help="create a namespace")
    create.add_argument("name")
    create.add_argument("--outbox", action="store_true", help="turn the outbox provider on for it")
    create.set_defaults(handler=cmd_namespace_create)
    nslist = ns.add_parser("list", help="list namespaces")
    nslist.add_argument("--json", action="store_true")
    nslist.set_defaults(handler=cmd_namespace_list)

    dev = sub.add_parser("device", help="manage a user's devices").add_subparsers(dest="action", required=True)
    add = dev.add_parser("add", help="register a device")
    add.add_argument("--namespace", required=True)
    add.add_argument("--user", required=True)
    add.add_argument("--provider", required=True)
    add.add_argument("--token", required=True)
    add.add_argument("--device-id", help="the app's name for the device (default: the provider name)")
    add.add_argument("--platform")
    add.set_defaults(handler=cmd_device_add)
    dlist = dev.add_parser("list", help="list a user's devices (never their tokens)")
    dlist.add_argument("--namespace", required=True)
    dlist.add_argument("--user", required=True)
    dlist.add_argument("--json", action="store_true")
    dlist.set_defaults(handler=cmd_device_list)
    rm = dev.add_parser("remove", help="remove a device by its id")
    rm.add_argument("--namespace", required=True)
    rm.add_argument("--id", required=True)
    rm.add_argument("--user", help="only if it belongs to this user")
    rm.set_defaults(handler=cmd_device_remove)

    cred = sub.add_parser("credentials", help="a namespace's push provider credentials (validated, shown redacted)")
    creds = cred.add_subparsers(dest="action", required=True)
    cset = creds.add_parser("set", help="save a provider's credentials (as PUT /v1/namespace/push-credentials/…)")
    cset.add_argument("--namespace", required=True)
    cset.add_argument("provider", help="outbox, apns, fcm, webpush, ntfy or expo")
    cset.add_argument("--file", help="file holding the credentials document (JSON)")
    cset.add_argument("--json", dest="json_doc", metavar="DOC",
                      help="the credentials document as JSON ('{}' for outbox)")
    cset.set_defaults(handler=cmd_credentials_set)
    clist = creds.add_parser("list", help="configured providers, redacted")
    clist.add_argument("--namespace", required=True)
    clist.add_argument("--json", action="store_true")
    clist.set_defaults(handler=cmd_credentials_list)
    crm = creds.add_parser("remove", help="remove a provider's credentials (idempotent)")
    crm.add_argument("--namespace", required=True)
    crm.add_argument("provider")
    crm.set_defaults(handler=cmd_credentials_remove)

    send = sub.add_parser("send", help="send a push to a user without a guest")
    send.add_argument("--namespace", required=True)
    send.add_argument("--user", required=True)
    send.add_argument("--title")
    send.add_argument("--body")
    send.add_argument("--data", help="JSON object of custom data")
    send.add_argument("--priority", choices=["high", "normal"])
    send.add_argument("--json", action="store_true")
    send.set_defaults(handler=cmd_send)

    outbox = sub.add_parser("outbox", help="what the outbox provider delivered in a namespace")
    outbox.add_argument("--namespace", required=True)
    outbox.add_argument("--limit", type=int, default=1000)
    outbox.add_argument("--json", action="store_true")
    outbox.set_defaults(handler=cmd_outbox)

    sends = sub.add_parser("sends", help="accepted sends and each device's delivery state").add_subparsers(
        dest="action", required=True)
    slist = sends.add_parser("list", help="sends in a namespace, newest first")
    slist.add_argument("--namespace", required=True)
    slist.add_argument("--user")
    slist.add_argument("--state", choices=["pending", "completed"])
    slist.add_argument("--limit", type=int, default=50)
    slist.add_argument("--json", action="store_true")
    slist.set_defaults(handler=cmd_sends)
    show = sends.add_parser("show", help="one send: each device's state, attempts and last error")
    show.add_argument("send_id")
    show.add_argument("--namespace", required=True)
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=cmd_sends)

    check = sub.add_parser("check", help="check the store's rows are whole and consistent (e.g. after a crash)")
    check.set_defaults(handler=cmd_check)

    keys = sub.add_parser("keys", help="master keys").add_subparsers(dest="action", required=True)
    rotate = keys.add_parser("rotate", help="re-seal every secret under the key ring's sealing key (see docs/fleet.md)")
    rotate.add_argument("--json", action="store_true")
    keys.add_parser("generate", help="print a new random master key (64 hex characters)")

    serve = sub.add_parser("serve", help="run the HTTP gateway")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=None,
                       help="worker processes (default: WASMHOST_WORKERS, else one per core)")
    _accept_db_after_command(sub)
    return parser


def _accept_db_after_command(sub: Any) -> None:
    """`--db` after the command too (``wasmhost serve --db …``); SUPPRESS keeps a value given before it."""
    for name, parser in sub.choices.items():
        if name in ("demo", "new"):  # no state: demo makes its own folder (--state), new writes files
            continue
        nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if nested:
            _accept_db_after_command(nested[0])
        else:
            parser.add_argument("--db", default=argparse.SUPPRESS, help="state URL (as before the command)")


async def _with_services(db: str | None, handler: Handler, args: argparse.Namespace) -> int:
    services = await Services.open(Settings.from_env(db))
    try:
        return await handler(services, args)
    finally:
        await services.aclose()


def _run_serve(args: argparse.Namespace) -> int:
    from .gateway.server import serve  # imported here: the other commands need no web stack

    serve(args.host, args.port, args.db, args.workers)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _run_serve(args)
        if args.command == "keys":
            if args.action == "generate":
                return cmd_keys_generate(args)
            return asyncio.run(cmd_keys_rotate(args))
        if args.command == "new":
            return cmd_new(args)
        if args.command == "demo":
            from .demo import run_demo

            return asyncio.run(run_demo(args.state))
        return asyncio.run(_with_services(args.db, args.handler, args))
    except CLIError as exc:
        print(f"wasmhost: error: {exc}", file=sys.stderr)
    except (NotFound, StoreError, InvalidModule, MessageError, CredentialsError, PushError) as exc:
        print(f"wasmhost: error: {exc}", file=sys.stderr)
    except ValueError as exc:
        print(f"wasmhost: error: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("wasmhost: interrupted", file=sys.stderr)
        return 130
    return EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
