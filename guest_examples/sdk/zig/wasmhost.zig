//! wasmhost guest SDK for Zig (ABI v1, core modules). Pinned to Zig 0.17.1 (`ziglang==0.17.1`).
//!
//! Host calls return Zig errors instead of negative codes; `code(err)` gives the ABI number back.
//! Build as an executable with no entry point and export `handle`:
//!   python -m ziglang build-exe fn.zig -target wasm32-freestanding -fno-entry \
//!       --export=handle -O ReleaseSmall -fstrip -femit-bin=fn.wasm
const std = @import("std");

const raw = struct {
    extern "wasmhost" fn input_len() i32;
    extern "wasmhost" fn input_read(buf: [*]u8, cap: usize) i32;
    extern "wasmhost" fn output_write(ptr: [*]const u8, len: usize) i32;
    extern "wasmhost" fn log(level: i32, ptr: [*]const u8, len: usize) i32;
    extern "wasmhost" fn push_send_to_user(user: [*]const u8, user_len: usize, msg: [*]const u8, msg_len: usize) i32;
    extern "wasmhost" fn push_wait(ticket: i32, out: [*]u8, cap: usize) i32;
};

/// A panic handler that logs `panic: <message>` at error level before trapping. Use it from your root
/// source file: `pub const panic = wasmhost.panic;` (`@panic`, and in safe builds overflow and
/// bounds checks, then explain themselves in the invocation's logs).
pub const panic = std.debug.FullPanic(logPanic);

fn logPanic(message: []const u8, first_trace_addr: ?usize) noreturn {
    _ = first_trace_addr;
    var buf: [512]u8 = undefined;
    const line = std.fmt.bufPrint(&buf, "panic: {s}", .{message}) catch message;
    _ = raw.log(4, line.ptr, line.len);
    @trap();
}

/// ABI v1 error codes as Zig errors (FAULT cannot happen through this SDK's slices).
pub const Error = error{ Invalid, Fault, TooBig, NotConfigured, RateLimited, Timeout, Unavailable, Limit, Unknown };

/// The ABI number of an error (for logs and for returning it from `handle`).
pub fn code(err: Error) i32 {
    return switch (err) {
        error.Invalid => -1,
        error.Fault => -2,
        error.TooBig => -3,
        error.NotConfigured => -4,
        error.RateLimited => -5,
        error.Timeout => -6,
        error.Unavailable => -7,
        error.Limit => -8,
        error.Unknown => -100,
    };
}

fn check(rc: i32) Error!u32 {
    if (rc >= 0) return @intCast(rc);
    return switch (rc) {
        -1 => error.Invalid,
        -2 => error.Fault,
        -3 => error.TooBig,
        -4 => error.NotConfigured,
        -5 => error.RateLimited,
        -6 => error.Timeout,
        -7 => error.Unavailable,
        -8 => error.Limit,
        else => error.Unknown,
    };
}

pub const Level = enum(i32) { debug = 0, info = 1, notice = 2, warn = 3, @"error" = 4 };

/// The whole invocation input, in memory owned by the caller.
pub fn input(allocator: std.mem.Allocator) ![]u8 {
    const n: usize = try check(raw.input_len());
    const buf = try allocator.alloc(u8, n);
    _ = try check(raw.input_read(buf.ptr, buf.len));
    return buf;
}

/// Appends to the invocation output. error.Limit: the output cap was reached (what fits is kept).
pub fn output(bytes: []const u8) Error!void {
    _ = try check(raw.output_write(bytes.ptr, bytes.len));
}

/// Records a log line; a full log budget is not the guest's problem, so errors are dropped.
pub fn log(level: Level, message: []const u8) void {
    _ = raw.log(@intFromEnum(level), message.ptr, message.len);
}

/// `log` with std.fmt formatting into a fixed buffer (long lines are cut).
pub fn logf(level: Level, comptime fmt: []const u8, args: anytype) void {
    var buf: [512]u8 = undefined;
    const line = std.fmt.bufPrint(&buf, fmt, args) catch buf[0..];
    log(level, line);
}

/// An accepted send; wait for its report with `wait`.
pub const Ticket = struct { id: i32 };

/// Starts sending `message_json` to every device of `user` in this namespace; returns once it is committed.
pub fn send(user: []const u8, message_json: []const u8) Error!Ticket {
    const t = try check(raw.push_send_to_user(user.ptr, user.len, message_json.ptr, message_json.len));
    return .{ .id = @intCast(t) };
}

/// Blocks until the send is finished and returns its JSON report (owned by the caller).
pub fn wait(allocator: std.mem.Allocator, ticket: Ticket) ![]u8 {
    var buf = try allocator.alloc(u8, 1024);
    const n: usize = try check(raw.push_wait(ticket.id, buf.ptr, buf.len));
    if (n <= buf.len) return buf[0..n];
    // snprintf rule: the report is longer than the buffer; waiting again is free.
    allocator.free(buf);
    buf = try allocator.alloc(u8, n);
    _ = try check(raw.push_wait(ticket.id, buf.ptr, buf.len));
    return buf;
}

/// The summary fields of a send report (`results` is left out).
pub const Report = struct {
    ok: bool,
    devices_attempted: u32,
    devices_succeeded: u32,
};

/// Waits and parses the report's summary.
pub fn waitReport(allocator: std.mem.Allocator, ticket: Ticket) !Report {
    const json = try wait(allocator, ticket);
    defer allocator.free(json);
    const parsed = try std.json.parseFromSlice(Report, allocator, json, .{ .ignore_unknown_fields = true });
    defer parsed.deinit();
    return parsed.value;
}
