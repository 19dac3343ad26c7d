//! notify-followers in Zig with the wasmhost SDK.
//!
//! Input:  {"author": "...", "followers": ["...", ...], "text": "..."}
//! Output: {"sent": n, "failed": m, "no_devices": k}
//! Every send is started before any is awaited, so deliveries run concurrently on the host.
const std = @import("std");
const wasmhost = @import("wasmhost");

const BAD_INPUT: i32 = 1; // handle's own error code: the input is not what this function expects

const Request = struct {
    author: []const u8,
    followers: []const []const u8,
    text: []const u8,
};

const Message = struct {
    title: []const u8,
    body: []const u8,
    data: struct { author: []const u8 },
};

const Summary = struct { sent: u32 = 0, failed: u32 = 0, no_devices: u32 = 0 };

export fn handle() i32 {
    return run() catch |err| {
        wasmhost.logf(.@"error", "notify-followers failed: {s}", .{@errorName(err)});
        return BAD_INPUT;
    };
}

fn run() !i32 {
    // One invocation, one fresh instance: an arena that is never freed is the right allocator.
    var arena = std.heap.ArenaAllocator.init(std.heap.wasm_allocator);
    const allocator = arena.allocator();

    const raw_input = try wasmhost.input(allocator);
    const parsed = std.json.parseFromSliceLeaky(Request, allocator, raw_input, .{ .ignore_unknown_fields = true }) catch |err| {
        wasmhost.logf(.@"error", "bad input: {s}", .{@errorName(err)});
        return BAD_INPUT;
    };
    const title = try std.fmt.allocPrint(allocator, "{s} posted", .{parsed.author});
    const message = try std.json.Stringify.valueAlloc(allocator, Message{
        .title = title,
        .body = parsed.text,
        .data = .{ .author = parsed.author },
    }, .{});

    // Send all first (each returns at once with a ticket), then wait for each.
    const tickets = try allocator.alloc(wasmhost.Error!wasmhost.Ticket, parsed.followers.len);
    for (parsed.followers, tickets) |user, *ticket| ticket.* = wasmhost.send(user, message);

    var summary = Summary{};
    for (parsed.followers, tickets) |user, ticket| {
        const t = ticket catch |err| {
            wasmhost.logf(.warn, "send to {s} refused: code {d}", .{ user, wasmhost.code(err) });
            summary.failed += 1;
            continue;
        };
        const report = wasmhost.waitReport(allocator, t) catch |err| {
            wasmhost.logf(.warn, "send to {s} failed: {s}", .{ user, @errorName(err) });
            summary.failed += 1;
            continue;
        };
        if (report.devices_attempted == 0) {
            summary.no_devices += 1;
        } else if (report.ok and report.devices_succeeded > 0) {
            summary.sent += 1;
        } else {
            summary.failed += 1;
        }
    }
    try wasmhost.output(try std.json.Stringify.valueAlloc(allocator, summary, .{}));
    return 0;
}
