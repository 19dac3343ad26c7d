//! __NAME__ — a wasmhost function: pushes `text` to `user`'s devices and says how many got it.
//!
//! input:  {"user": "alice", "text": "Your order A-17 has shipped"}
//! output: notified alice: 1/1 devices
//! return: 0 ok, 1 bad input or a failed send (logged)
const std = @import("std");
const wasmhost = @import("wasmhost");

/// `@panic` (and, in safe builds, overflow and bounds checks) logs its message before the trap.
pub const panic = wasmhost.panic;

const Input = struct { user: []const u8, text: []const u8 };
const Message = struct { title: []const u8, body: []const u8 };

export fn handle() i32 {
    return run() catch |err| {
        wasmhost.logf(.@"error", "__NAME__ failed: {s}", .{@errorName(err)});
        return 1;
    };
}

fn run() !i32 {
    // One invocation, one fresh instance: an arena that is never freed is the right allocator.
    var arena = std.heap.ArenaAllocator.init(std.heap.wasm_allocator);
    const allocator = arena.allocator();

    const raw_input = try wasmhost.input(allocator);
    const in = std.json.parseFromSliceLeaky(Input, allocator, raw_input, .{ .ignore_unknown_fields = true }) catch |err| {
        wasmhost.logf(.@"error", "bad input ({s}): expected {{\"user\": \"...\", \"text\": \"...\"}}", .{@errorName(err)});
        return 1;
    };
    const message = try std.json.Stringify.valueAlloc(allocator, Message{ .title = "__NAME__", .body = in.text }, .{});
    const ticket = try wasmhost.send(in.user, message);
    const report = try wasmhost.waitReport(allocator, ticket);
    try wasmhost.output(try std.fmt.allocPrint(allocator, "notified {s}: {d}/{d} devices", .{
        in.user, report.devices_succeeded, report.devices_attempted,
    }));
    return 0;
}
