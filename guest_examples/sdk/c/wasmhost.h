/*
 * wasmhost.h — header-only C SDK for the wasmhost guest ABI v1 (core modules).
 *
 * Build freestanding (no libc needed):
 *   python -m ziglang cc --target=wasm32-freestanding -Os -nostdlib -s -Wl,--no-entry \
 *       -o fn.wasm fn.c
 * and export your entry point with WASMHOST_EXPORT("handle"):
 *   WASMHOST_EXPORT("handle") int32_t handle(void) { ... return 0; }
 *
 * Every host call returns >= 0 on success or a negative WASMHOST_E* code.
 * The namespace is bound by the host; nothing here can name it.
 */
#ifndef WASMHOST_H
#define WASMHOST_H

#include <stddef.h>
#include <stdint.h>

#define WASMHOST_IMPORT(name) __attribute__((import_module("wasmhost"), import_name(name)))
#define WASMHOST_EXPORT(name) __attribute__((export_name(name)))

/* ---- raw ABI v1 imports ------------------------------------------------------------------ */
WASMHOST_IMPORT("input_len") int32_t wasmhost_input_len(void);
WASMHOST_IMPORT("input_read") int32_t wasmhost_input_read(void *buf, int32_t cap);
WASMHOST_IMPORT("output_write") int32_t wasmhost_output_write(const void *ptr, int32_t len);
WASMHOST_IMPORT("log") int32_t wasmhost_log(int32_t level, const void *ptr, int32_t len);
WASMHOST_IMPORT("push_send_to_user")
int32_t wasmhost_push_send_to_user(const char *user, int32_t user_len, const char *msg, int32_t msg_len);
WASMHOST_IMPORT("push_wait") int32_t wasmhost_push_wait(int32_t ticket, char *out, int32_t cap);

/* ---- status codes ------------------------------------------------------------------------ */
#define WASMHOST_OK 0
#define WASMHOST_EINVAL (-1)         /* bad argument, unknown ticket, invalid JSON or UTF-8 */
#define WASMHOST_EFAULT (-2)         /* pointer or length outside guest memory */
#define WASMHOST_ETOO_BIG (-3)       /* message over 16 KiB (or user id over 512 bytes) */
#define WASMHOST_ENOT_CONFIGURED (-4) /* the namespace has no push provider */
#define WASMHOST_ERATE_LIMITED (-5)
#define WASMHOST_ETIMEOUT (-6)       /* the invocation deadline passed while waiting */
#define WASMHOST_EUNAVAILABLE (-7)   /* store or internal failure */
#define WASMHOST_ELIMIT (-8)         /* per-invocation cap on sends, logs or output reached */

/* log levels */
#define WASMHOST_DEBUG 0
#define WASMHOST_INFO 1
#define WASMHOST_NOTICE 2
#define WASMHOST_WARN 3
#define WASMHOST_ERROR 4

static inline const char *wasmhost_strerror(int32_t code) {
    switch (code) {
    case WASMHOST_OK: return "ok";
    case WASMHOST_EINVAL: return "invalid argument";
    case WASMHOST_EFAULT: return "bad pointer or length";
    case WASMHOST_ETOO_BIG: return "too big";
    case WASMHOST_ENOT_CONFIGURED: return "push is not configured for this namespace";
    case WASMHOST_ERATE_LIMITED: return "rate limited";
    case WASMHOST_ETIMEOUT: return "timed out";
    case WASMHOST_EUNAVAILABLE: return "push is unavailable";
    case WASMHOST_ELIMIT: return "per-invocation limit reached";
    default: return code >= 0 ? "ok" : "unknown error";
    }
}

/* ---- small freestanding helpers ---------------------------------------------------------- */
static inline int32_t wasmhost_strlen(const char *s) {
    int32_t n = 0;
    while (s[n]) n++;
    return n;
}

/* Read the whole input into buf. Returns the input length; if it is > cap, only cap bytes were
 * read and the caller should treat the input as too big. */
static inline int32_t wasmhost_read_input(void *buf, int32_t cap) {
    int32_t n = wasmhost_input_len();
    if (n < 0) return n;
    int32_t r = wasmhost_input_read(buf, cap);
    return r < 0 ? r : n;
}

static inline int32_t wasmhost_write(const char *s) { return wasmhost_output_write(s, wasmhost_strlen(s)); }

static inline int32_t wasmhost_log_str(int32_t level, const char *s) {
    return wasmhost_log(level, s, wasmhost_strlen(s));
}

/* Send msg_json to user and wait for the report. Returns the report's full length (which may be
 * larger than cap: then report holds the first cap bytes) or a negative code. */
static inline int32_t wasmhost_send_and_wait(const char *user, const char *msg_json, char *report, int32_t cap) {
    int32_t ticket = wasmhost_push_send_to_user(user, wasmhost_strlen(user), msg_json, wasmhost_strlen(msg_json));
    if (ticket < 0) return ticket;
    return wasmhost_push_wait(ticket, report, cap);
}

/* ---- tiny string builder (never overflows; remembers if it had to truncate) -------------- */
typedef struct {
    char *buf;
    int32_t cap; /* including the terminating NUL */
    int32_t len;
    int overflow;
} wasmhost_sb;

static inline void wasmhost_sb_init(wasmhost_sb *sb, char *buf, int32_t cap) {
    sb->buf = buf; sb->cap = cap; sb->len = 0; sb->overflow = 0;
    if (cap > 0) buf[0] = 0;
}

static inline void wasmhost_sb_putc(wasmhost_sb *sb, char c) {
    if (sb->len + 1 < sb->cap) { sb->buf[sb->len++] = c; sb->buf[sb->len] = 0; }
    else sb->overflow = 1;
}

static inline void wasmhost_sb_puts(wasmhost_sb *sb, const char *s) {
    while (*s) wasmhost_sb_putc(sb, *s++);
}

static inline void wasmhost_sb_putn(wasmhost_sb *sb, const char *s, int32_t n) {
    for (int32_t i = 0; i < n; i++) wasmhost_sb_putc(sb, s[i]);
}

static inline void wasmhost_sb_puti(wasmhost_sb *sb, int64_t v) {
    char tmp[24];
    int n = 0;
    uint64_t u = v < 0 ? (uint64_t)(-(v + 1)) + 1 : (uint64_t)v;
    if (v < 0) wasmhost_sb_putc(sb, '-');
    do { tmp[n++] = (char)('0' + u % 10); u /= 10; } while (u);
    while (n) wasmhost_sb_putc(sb, tmp[--n]);
}

/* Append s (UTF-8) as the inside of a JSON string: quotes, backslashes and control chars escaped. */
static inline void wasmhost_sb_put_json_escaped(wasmhost_sb *sb, const char *s) {
    static const char hex[] = "0123456789abcdef";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') { wasmhost_sb_putc(sb, '\\'); wasmhost_sb_putc(sb, (char)c); }
        else if (c == '\n') wasmhost_sb_puts(sb, "\\n");
        else if (c == '\r') wasmhost_sb_puts(sb, "\\r");
        else if (c == '\t') wasmhost_sb_puts(sb, "\\t");
        else if (c < 0x20) {
            wasmhost_sb_puts(sb, "\\u00");
            wasmhost_sb_putc(sb, hex[c >> 4]);
            wasmhost_sb_putc(sb, hex[c & 15]);
        } else wasmhost_sb_putc(sb, (char)c);
    }
}

/* ---- minimal JSON reading: top-level members of one object ------------------------------- */
typedef struct { const char *p, *end; } wasmhost_json;

static inline void wasmhost__ws(wasmhost_json *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

static inline int wasmhost__hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Parse a JSON string at j->p (which must be '"'). Decoded UTF-8 goes to out (if non-NULL, NUL
 * terminated, at most cap-1 bytes). Returns the decoded length, or -1 if malformed or too long. */
static inline int32_t wasmhost__string(wasmhost_json *j, char *out, int32_t cap) {
    int32_t n = 0;
    if (j->p >= j->end || *j->p != '"') return -1;
    j->p++;
    while (j->p < j->end) {
        unsigned char c = (unsigned char)*j->p++;
        uint32_t cp;
        if (c == '"') {
            if (out) { if (n >= cap) return -1; out[n] = 0; }
            return n;
        }
        if (c < 0x20) return -1;
        if (c != '\\') { cp = c; goto raw; }
        if (j->p >= j->end) return -1;
        c = (unsigned char)*j->p++;
        switch (c) {
        case '"': case '\\': case '/': cp = c; break;
        case 'b': cp = '\b'; break;
        case 'f': cp = '\f'; break;
        case 'n': cp = '\n'; break;
        case 'r': cp = '\r'; break;
        case 't': cp = '\t'; break;
        case 'u': {
            if (j->end - j->p < 4) return -1;
            cp = 0;
            for (int i = 0; i < 4; i++) { int h = wasmhost__hex(*j->p++); if (h < 0) return -1; cp = cp * 16 + (uint32_t)h; }
            if (cp >= 0xD800 && cp <= 0xDBFF) { /* surrogate pair */
                uint32_t lo = 0;
                if (j->end - j->p < 6 || j->p[0] != '\\' || j->p[1] != 'u') return -1;
                j->p += 2;
                for (int i = 0; i < 4; i++) { int h = wasmhost__hex(*j->p++); if (h < 0) return -1; lo = lo * 16 + (uint32_t)h; }
                if (lo < 0xDC00 || lo > 0xDFFF) return -1;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) return -1;
            break;
        }
        default: return -1;
        }
        /* encode cp as UTF-8 */
        {
            char enc[4]; int k;
            if (cp < 0x80) { enc[0] = (char)cp; k = 1; }
            else if (cp < 0x800) { enc[0] = (char)(0xC0 | (cp >> 6)); enc[1] = (char)(0x80 | (cp & 63)); k = 2; }
            else if (cp < 0x10000) { enc[0] = (char)(0xE0 | (cp >> 12)); enc[1] = (char)(0x80 | ((cp >> 6) & 63)); enc[2] = (char)(0x80 | (cp & 63)); k = 3; }
            else { enc[0] = (char)(0xF0 | (cp >> 18)); enc[1] = (char)(0x80 | ((cp >> 12) & 63)); enc[2] = (char)(0x80 | ((cp >> 6) & 63)); enc[3] = (char)(0x80 | (cp & 63)); k = 4; }
            for (int i = 0; i < k; i++) { if (out) { if (n + 1 >= cap) return -1; out[n] = enc[i]; } n++; }
            continue;
        }
    raw:
        if (out) { if (n + 1 >= cap) return -1; out[n] = (char)cp; }
        n++;
    }
    return -1;
}

/* Skip any JSON value at j->p. Returns 0, or -1 if malformed. Nesting is bounded. */
static inline int wasmhost__skip(wasmhost_json *j, int depth) {
    wasmhost__ws(j);
    if (j->p >= j->end || depth > 64) return -1;
    char c = *j->p;
    if (c == '"') return wasmhost__string(j, 0, 0) < 0 ? -1 : 0;
    if (c == '{' || c == '[') {
        char close = c == '{' ? '}' : ']';
        j->p++;
        wasmhost__ws(j);
        if (j->p < j->end && *j->p == close) { j->p++; return 0; }
        for (;;) {
            if (c == '{') {
                wasmhost__ws(j);
                if (wasmhost__string(j, 0, 0) < 0) return -1;
                wasmhost__ws(j);
                if (j->p >= j->end || *j->p++ != ':') return -1;
            }
            if (wasmhost__skip(j, depth + 1) < 0) return -1;
            wasmhost__ws(j);
            if (j->p >= j->end) return -1;
            if (*j->p == ',') { j->p++; continue; }
            if (*j->p == close) { j->p++; return 0; }
            return -1;
        }
    }
    /* number, true, false, null */
    const char *start = j->p;
    while (j->p < j->end && (*j->p == '-' || *j->p == '+' || *j->p == '.' || (*j->p >= '0' && *j->p <= '9') ||
                             (*j->p >= 'a' && *j->p <= 'z') || (*j->p >= 'A' && *j->p <= 'Z')))
        j->p++;
    return j->p > start ? 0 : -1;
}

/* Find top-level member `key` of the object in json[0..len). With `strict`, the whole document is
 * checked, so malformed input is refused even after the key; without, the walk stops at the key
 * (for reading a prefix of a host-written report). On success j->p points at the (first) value of
 * `key` and 1 is returned; 0 if absent; -1 if the document is not one well-formed object. */
static inline int wasmhost__find(const char *json, int32_t len, const char *key, wasmhost_json *j, int strict) {
    char name[64];
    const char *found = 0;
    j->p = json; j->end = json + len;
    wasmhost__ws(j);
    if (j->p >= j->end || *j->p++ != '{') return -1;
    wasmhost__ws(j);
    if (j->p < j->end && *j->p == '}') { j->p++; goto end; }
    for (;;) {
        wasmhost__ws(j);
        const char *kstart = j->p;
        int32_t kn = wasmhost__string(j, name, sizeof name);
        if (kn < 0) { /* a key too long to be ours: skip it */
            j->p = kstart;
            if (wasmhost__string(j, 0, 0) < 0) return -1;
        }
        wasmhost__ws(j);
        if (j->p >= j->end || *j->p++ != ':') return -1;
        wasmhost__ws(j);
        if (kn >= 0 && !found) {
            int32_t i = 0;
            while (key[i] && i < kn && key[i] == name[i]) i++;
            if (!key[i] && i == kn) {
                if (!strict) return 1;
                found = j->p;
            }
        }
        if (wasmhost__skip(j, 0) < 0) return -1;
        wasmhost__ws(j);
        if (j->p >= j->end) return -1;
        if (*j->p == ',') { j->p++; continue; }
        if (*j->p == '}') { j->p++; break; }
        return -1;
    }
end:
    wasmhost__ws(j);
    if (j->p != j->end) return -1; /* trailing garbage */
    if (!found) return 0;
    j->p = found;
    return 1;
}

/* Top-level string member `key` decoded into out (NUL-terminated). Returns its length, -1 if
 * missing, not a string, malformed or longer than cap-1. */
static inline int32_t wasmhost_json_get_string(const char *json, int32_t len, const char *key, char *out, int32_t cap) {
    wasmhost_json j;
    if (wasmhost__find(json, len, key, &j, 1) != 1) return -1;
    return wasmhost__string(&j, out, cap);
}

/* Top-level non-negative integer member `key`, or -1. Reads only as far as the key, so a prefix
 * of a longer document (a report that did not fit the buffer) is enough. */
static inline int64_t wasmhost_json_get_int(const char *json, int32_t len, const char *key) {
    wasmhost_json j;
    if (wasmhost__find(json, len, key, &j, 0) != 1) return -1;
    int64_t v = 0;
    const char *start = j.p;
    while (j.p < j.end && *j.p >= '0' && *j.p <= '9' && v < ((int64_t)1 << 52)) v = v * 10 + (*j.p++ - '0');
    return j.p > start ? v : -1;
}

/* Iterate the top-level array member `key` of the object in json[0..len):
 *   wasmhost_json it;
 *   if (wasmhost_json_array(json, len, "followers", &it) == 1)
 *       while ((n = wasmhost_json_next_string(&it, buf, sizeof buf)) >= 0) { ... }
 * wasmhost_json_array returns 1 (it is ready), 0 if absent, -1 if malformed or not an array.
 * wasmhost_json_next_string returns the next element's decoded length (into out, NUL-terminated),
 * -2 after the last element, or -1 if the element is not a string, is malformed or is too long. */
static inline int wasmhost_json_array(const char *json, int32_t len, const char *key, wasmhost_json *it) {
    int found = wasmhost__find(json, len, key, it, 1);
    if (found != 1) return found;
    if (it->p >= it->end || *it->p != '[') return -1;
    it->p++;
    wasmhost__ws(it);
    if (it->p < it->end && *it->p == ']') it->p = it->end; /* empty: nothing to yield */
    return 1;
}

static inline int32_t wasmhost_json_next_string(wasmhost_json *it, char *out, int32_t cap) {
    wasmhost__ws(it);
    if (it->p >= it->end) return -2;
    int32_t n = wasmhost__string(it, out, cap);
    if (n < 0) return -1;
    wasmhost__ws(it);
    if (it->p < it->end && *it->p == ',') it->p++;
    else it->p = it->end; /* ']' (the document was validated by wasmhost__find): done */
    return n;
}

/* The summary of a send report. The host writes "ok", "devices_attempted" and "devices_succeeded"
 * first, in that order and without spaces, so a report cut off by a small push_wait buffer still
 * has them. Returns 0, or -1 if `report` does not start that way. */
static inline int wasmhost_report_summary(const char *report, int32_t len, int *ok, int64_t *attempted,
                                          int64_t *succeeded) {
    static const char k_ok[] = "{\"ok\":", k_att[] = ",\"devices_attempted\":", k_suc[] = ",\"devices_succeeded\":";
    const char *p = report, *end = report + len;
    int64_t *slots[2] = {attempted, succeeded};
    const char *keys[2] = {k_att, k_suc};
    for (int i = 0; k_ok[i]; i++, p++) if (p >= end || *p != k_ok[i]) return -1;
    if (end - p >= 4 && p[0] == 't' && p[1] == 'r' && p[2] == 'u' && p[3] == 'e') { *ok = 1; p += 4; }
    else if (end - p >= 5 && p[0] == 'f' && p[1] == 'a' && p[2] == 'l' && p[3] == 's' && p[4] == 'e') { *ok = 0; p += 5; }
    else return -1;
    for (int k = 0; k < 2; k++) {
        for (int i = 0; keys[k][i]; i++, p++) if (p >= end || *p != keys[k][i]) return -1;
        const char *start = p;
        int64_t v = 0;
        while (p < end && *p >= '0' && *p <= '9' && v < ((int64_t)1 << 52)) v = v * 10 + (*p++ - '0');
        if (p == start) return -1;
        *slots[k] = v;
    }
    return 0;
}

/* C has no panics: WASMHOST_PANIC("why") and WASMHOST_ASSERT(cond) log "panic: <why> at <file>:<line>"
 * at error level, then trap, so the invocation's error and its logs say what went wrong and where. */
static inline _Noreturn void wasmhost__panic(const char *what, const char *file, int line) {
    char buf[512];
    wasmhost_sb sb;
    wasmhost_sb_init(&sb, buf, sizeof buf);
    wasmhost_sb_puts(&sb, "panic: ");
    wasmhost_sb_puts(&sb, what);
    wasmhost_sb_puts(&sb, " at ");
    wasmhost_sb_puts(&sb, file);
    wasmhost_sb_putc(&sb, ':');
    wasmhost_sb_puti(&sb, line);
    wasmhost_log(WASMHOST_ERROR, buf, sb.len);
    __builtin_trap();
}
#define WASMHOST_PANIC(why) wasmhost__panic((why), __FILE__, __LINE__)
#define WASMHOST_ASSERT(cond) \
    do { if (!(cond)) wasmhost__panic("assertion failed: " #cond, __FILE__, __LINE__); } while (0)

#endif /* WASMHOST_H */
