/*
 * notify-followers in C with the header-only SDK (../sdk/c/wasmhost.h), freestanding, no libc.
 *
 * Input:  {"author": "...", "followers": ["...", ...], "text": "..."}
 * Output: {"sent": n, "failed": m, "no_devices": k}
 * Every send is started before any is awaited, so deliveries run concurrently on the host.
 */
#include "../sdk/c/wasmhost.h"

#define BAD_INPUT 1            /* handle's own error code: the input is not what this function expects */
#define MAX_INPUT (64 * 1024)  /* larger inputs are refused */
#define MAX_FOLLOWERS 1000     /* the platform's max_sends maximum */
#define MAX_USER 4097          /* longer than the host allows (512 bytes): it says TOO_BIG */
#define MAX_FIELD 4096         /* author and text, decoded */

static char input[MAX_INPUT];
static char author[MAX_FIELD], text[MAX_FIELD], user[MAX_USER];
static char message[3 * MAX_FIELD + 256];
static char report[256];
static int32_t tickets[MAX_FOLLOWERS];

static int32_t bad_input(const char *why) {
    wasmhost_sb sb;
    char line[160];
    wasmhost_sb_init(&sb, line, sizeof line);
    wasmhost_sb_puts(&sb, "bad input: ");
    wasmhost_sb_puts(&sb, why);
    wasmhost_log_str(WASMHOST_ERROR, line);
    return BAD_INPUT;
}

static void log_failure(const char *what, const char *who, int32_t code) {
    wasmhost_sb sb;
    char line[700];
    wasmhost_sb_init(&sb, line, sizeof line);
    wasmhost_sb_puts(&sb, what);
    wasmhost_sb_puts(&sb, who);
    wasmhost_sb_puts(&sb, ": code ");
    wasmhost_sb_puti(&sb, code);
    wasmhost_log_str(WASMHOST_WARN, line);
}

WASMHOST_EXPORT("handle") int32_t handle(void) {
    int32_t len = wasmhost_read_input(input, sizeof input);
    if (len < 0 || len > (int32_t)sizeof input) return bad_input("input is larger than 64 KiB");
    if (wasmhost_json_get_string(input, len, "author", author, sizeof author) < 0)
        return bad_input("\"author\" must be a string (at most 4 KiB)");
    if (wasmhost_json_get_string(input, len, "text", text, sizeof text) < 0)
        return bad_input("\"text\" must be a string (at most 4 KiB)");

    /* Check the whole list before sending anything: a bad input sends nothing. */
    wasmhost_json it;
    int32_t n, count = 0;
    if (wasmhost_json_array(input, len, "followers", &it) != 1) return bad_input("\"followers\" must be a list");
    while ((n = wasmhost_json_next_string(&it, user, sizeof user)) >= 0) count++;
    if (n == -1) return bad_input("\"followers\" must be a list of strings (at most 4 KiB each)");
    if (count > MAX_FOLLOWERS) return bad_input("more than 1000 followers");

    wasmhost_sb sb;
    wasmhost_sb_init(&sb, message, sizeof message);
    wasmhost_sb_puts(&sb, "{\"title\":\"");
    wasmhost_sb_put_json_escaped(&sb, author);
    wasmhost_sb_puts(&sb, " posted\",\"body\":\"");
    wasmhost_sb_put_json_escaped(&sb, text);
    wasmhost_sb_puts(&sb, "\",\"data\":{\"author\":\"");
    wasmhost_sb_put_json_escaped(&sb, author);
    wasmhost_sb_puts(&sb, "\"}}");

    /* Send all first (each returns at once with a ticket), then wait for each. */
    wasmhost_json_array(input, len, "followers", &it);
    for (int32_t i = 0; i < count; i++) {
        n = wasmhost_json_next_string(&it, user, sizeof user);
        tickets[i] = wasmhost_push_send_to_user(user, n, message, sb.len);
    }
    int32_t sent = 0, failed = 0, no_devices = 0;
    wasmhost_json_array(input, len, "followers", &it);
    for (int32_t i = 0; i < count; i++) {
        wasmhost_json_next_string(&it, user, sizeof user);
        if (tickets[i] < 0) {
            log_failure("send refused for ", user, tickets[i]);
            failed++;
            continue;
        }
        /* A small buffer is enough: the summary fields come first in every report. */
        int32_t rlen = wasmhost_push_wait(tickets[i], report, sizeof report);
        if (rlen < 0) {
            log_failure("send failed for ", user, rlen);
            failed++;
            continue;
        }
        int is_ok = 0;
        int64_t attempted = 0, succeeded = 0;
        if (wasmhost_report_summary(report, rlen < (int32_t)sizeof report ? rlen : (int32_t)sizeof report, &is_ok,
                                    &attempted, &succeeded) < 0) {
            log_failure("unreadable report for ", user, rlen);
            failed++;
            continue;
        }
        if (attempted == 0) no_devices++;
        else if (is_ok && succeeded > 0) sent++;
        else failed++;
    }

    char out[96];
    wasmhost_sb_init(&sb, out, sizeof out);
    wasmhost_sb_puts(&sb, "{\"sent\":");
    wasmhost_sb_puti(&sb, sent);
    wasmhost_sb_puts(&sb, ",\"failed\":");
    wasmhost_sb_puti(&sb, failed);
    wasmhost_sb_puts(&sb, ",\"no_devices\":");
    wasmhost_sb_puti(&sb, no_devices);
    wasmhost_sb_puts(&sb, "}");
    wasmhost_output_write(out, sb.len);
    return 0;
}
