/*
 * welcome — send a welcome push to a new user and report how many devices got it.
 *
 * input:  {"user": "alice", "name": "Alice"}   ("name" is optional; defaults to the user id)
 * output: welcomed alice: 2/2 devices
 * return: 0 ok, 1 bad input, 2 send not accepted, 3 wait failed
 */
#include "../sdk/c/wasmhost.h"

static char input[4096];
static char user[513];
static char name[256];
static char msg[2048];
static char report[1024];
static char line[1024];

static int32_t fail(int32_t rc, const char *what, int32_t code) {
    wasmhost_sb sb;
    wasmhost_sb_init(&sb, line, sizeof line);
    wasmhost_sb_puts(&sb, what);
    if (code < 0) {
        wasmhost_sb_puts(&sb, ": ");
        wasmhost_sb_puts(&sb, wasmhost_strerror(code));
    }
    wasmhost_log_str(WASMHOST_ERROR, line);
    return rc;
}

WASMHOST_EXPORT("handle") int32_t handle(void) {
    int32_t n = wasmhost_read_input(input, sizeof input);
    if (n < 0) return fail(1, "reading input failed", n);
    if (n > (int32_t)sizeof input) return fail(1, "input is larger than 4 KiB", 0);
    if (wasmhost_json_get_string(input, n, "user", user, sizeof user) < 1)
        return fail(1, "input must be a JSON object with a non-empty string \"user\" (and optional \"name\")", 0);
    if (wasmhost_json_get_string(input, n, "name", name, sizeof name) < 1) {
        int32_t i = 0;
        for (; user[i] && i < (int32_t)sizeof name - 1; i++) name[i] = user[i];
        name[i] = 0;
    }

    wasmhost_sb sb;
    wasmhost_sb_init(&sb, msg, sizeof msg);
    wasmhost_sb_puts(&sb, "{\"title\":\"Welcome, ");
    wasmhost_sb_put_json_escaped(&sb, name);
    wasmhost_sb_puts(&sb, "!\",\"body\":\"Thanks for joining, ");
    wasmhost_sb_put_json_escaped(&sb, name);
    wasmhost_sb_puts(&sb, ". You're all set.\",\"data\":{\"kind\":\"welcome\"}}");
    if (sb.overflow) return fail(1, "name is too long", 0);

    int32_t ticket = wasmhost_push_send_to_user(user, wasmhost_strlen(user), msg, sb.len);
    if (ticket < 0) return fail(2, "push_send_to_user", ticket);
    int32_t len = wasmhost_push_wait(ticket, report, sizeof report);
    if (len < 0) return fail(3, "push_wait", len);
    if (len > (int32_t)sizeof report) len = sizeof report; /* the counts come first; a prefix is enough */

    int64_t attempted = wasmhost_json_get_int(report, len, "devices_attempted");
    int64_t succeeded = wasmhost_json_get_int(report, len, "devices_succeeded");
    wasmhost_sb_init(&sb, line, sizeof line);
    wasmhost_sb_puts(&sb, "welcomed ");
    wasmhost_sb_puts(&sb, user);
    wasmhost_sb_puts(&sb, ": ");
    wasmhost_sb_puti(&sb, succeeded);
    wasmhost_sb_putc(&sb, '/');
    wasmhost_sb_puti(&sb, attempted);
    wasmhost_sb_puts(&sb, " devices");
    wasmhost_write(line);
    return 0;
}
