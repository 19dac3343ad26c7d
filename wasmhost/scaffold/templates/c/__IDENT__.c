/*
 * __NAME__ — a wasmhost function: pushes `text` to `user`'s devices and says how many got it.
 *
 * input:  {"user": "alice", "text": "Your order A-17 has shipped"}
 * output: notified alice: 1/1 devices
 * return: 0 ok, 1 bad input, 2 the send was refused, 3 the wait failed (each logged)
 */
#include "wasmhost.h"

static char input[4096];
static char user[513];
static char text[1024];
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
    if (n < 0) return fail(1, "reading the input failed", n);
    if (n > (int32_t)sizeof input) return fail(1, "the input is larger than 4 KiB", 0);
    if (wasmhost_json_get_string(input, n, "user", user, sizeof user) < 1 ||
        wasmhost_json_get_string(input, n, "text", text, sizeof text) < 0)
        return fail(1, "bad input: expected {\"user\": \"...\", \"text\": \"...\"}", 0);

    wasmhost_sb sb;
    wasmhost_sb_init(&sb, msg, sizeof msg);
    wasmhost_sb_puts(&sb, "{\"title\":\"__NAME__\",\"body\":\"");
    wasmhost_sb_put_json_escaped(&sb, text);
    wasmhost_sb_puts(&sb, "\"}");
    if (sb.overflow) return fail(1, "text is too long", 0);

    int32_t ticket = wasmhost_push_send_to_user(user, wasmhost_strlen(user), msg, sb.len);
    if (ticket < 0) return fail(2, "push_send_to_user", ticket);
    int32_t len = wasmhost_push_wait(ticket, report, sizeof report);
    if (len < 0) return fail(3, "push_wait", len);
    if (len > (int32_t)sizeof report) len = sizeof report; /* the counts come first: a prefix is enough */
    int ok = 0;
    int64_t attempted = 0, succeeded = 0;
    if (wasmhost_report_summary(report, len, &ok, &attempted, &succeeded) != 0) return fail(3, "bad report", 0);

    wasmhost_sb_init(&sb, line, sizeof line);
    wasmhost_sb_puts(&sb, "notified ");
    wasmhost_sb_puts(&sb, user);
    wasmhost_sb_puts(&sb, ": ");
    wasmhost_sb_puti(&sb, succeeded);
    wasmhost_sb_putc(&sb, '/');
    wasmhost_sb_puti(&sb, attempted);
    wasmhost_sb_puts(&sb, " devices");
    wasmhost_write(line);
    return 0;
}
