/* pkgtool-init: the compiled parts of pkg/init, one static multi-call binary.
 *
 * The shell scripts (rcS, rcK, bundle) keep the boot logic readable; what they did with a
 * fork per file or per jq call, and what under emulation (QEMU TCG) cost seconds, is done
 * here in one process each:
 *
 *   /init                       the kernel's first program (a symlink to this binary)
 *   pkgtool-init mount TYPE DIR OPTIONS...   pseudo file systems, not yet mounted
 *   pkgtool-init modaliases F   device modaliases not yet listed in F (then added to F)
 *   pkgtool-init runtime F      runtime.json F as lines for the bundle script
 *   pkgtool-init json-get KEY   a top-level value of the JSON object on stdin
 *   pkgtool-init json-each FIELD [KEY=VALUE]
 *                               FIELD of each object of the JSON array on stdin
 */
#ifndef PKGTOOL_INIT_H
#define PKGTOOL_INIT_H

#include <stddef.h>

/* Field separator of the lines the bundle script reads: not whitespace, so that empty
 * fields survive `IFS=$US read`, and never part of a path. */
#define FIELD_SEP '\037'

int cmd_init(int argc, char **argv);
int cmd_mount(int argc, char **argv);
int cmd_modaliases(int argc, char **argv);
int cmd_runtime(int argc, char **argv);
int cmd_json_get(int argc, char **argv);
int cmd_json_each(int argc, char **argv);

/* ---- json.c: a small JSON reader (RFC 8259), enough for runtime.json and runc's output */

enum json_kind { JSON_NULL, JSON_FALSE, JSON_TRUE, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT };

struct json {
	enum json_kind kind;
	char *text;            /* string value (UTF-8, NUL-terminated) or number literal */
	size_t len;            /* string length (strings may hold NUL: refused by users) */
	char *key;             /* member name when inside an object */
	struct json *child;    /* first element or member */
	struct json *next;     /* next sibling */
};

/* Parse a whole document; on error returns NULL and sets *error to a static message. */
struct json *json_parse(const char *text, size_t len, const char **error);
struct json *json_member(const struct json *object, const char *key);
void json_free(struct json *value);

/* ---- util.c */

/* The whole file (or stdin for "-"), NUL-terminated; NULL with errno set on failure. */
char *read_all(const char *path, size_t *len);
/* Print a message prefixed with "pkgtool-init: " to stderr; returns 1 (an exit status). */
int fail(const char *format, ...) __attribute__((format(printf, 1, 2)));

#endif
