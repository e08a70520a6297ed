/* pkgtool-init json-get KEY and json-each FIELD [KEY=VALUE]: the two questions the bundle
 * script asks of runc's JSON output (`runc state NAME`: its pid and status; `runc list -f
 * json`: the ids of the running containers), answered without jq. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pkgtool-init.h"

/* A scalar as `jq -r` prints it: strings raw, numbers as written, null as "null". */
static void print_scalar(const struct json *v)
{
	switch (v ? v->kind : JSON_NULL) {
	case JSON_STRING:
	case JSON_NUMBER: fputs(v->text, stdout); break;
	case JSON_TRUE: fputs("true", stdout); break;
	case JSON_FALSE: fputs("false", stdout); break;
	case JSON_NULL: fputs("null", stdout); break;
	default: fputs("(structure)", stdout); break;
	}
	putchar('\n');
}

static struct json *read_stdin(const char *command)
{
	const char *error = NULL;
	struct json *doc;
	size_t len;
	char *text = read_all("-", &len);

	if (!text) {
		fail("%s: cannot read stdin: %m", command);
		return NULL;
	}
	doc = json_parse(text, len, &error);
	free(text);
	if (!doc)
		fail("%s: stdin is not JSON: %s", command, error);
	return doc;
}

int cmd_json_get(int argc, char **argv)
{
	struct json *doc;

	if (argc != 2)
		return fail("usage: pkgtool-init json-get KEY < OBJECT.json");
	doc = read_stdin("json-get");
	if (!doc)
		return 1;
	if (doc->kind != JSON_OBJECT) {
		json_free(doc);
		return fail("json-get: expected a JSON object");
	}
	print_scalar(json_member(doc, argv[1]));
	json_free(doc);
	return 0;
}

int cmd_json_each(int argc, char **argv)
{
	const char *want_key = NULL, *want = NULL;
	char *filter = NULL;
	struct json *doc;

	if (argc != 2 && argc != 3)
		return fail("usage: pkgtool-init json-each FIELD [KEY=VALUE] < ARRAY.json");
	if (argc == 3) {
		filter = strdup(argv[2]);
		want = filter ? strchr(filter, '=') : NULL;
		if (!want) {
			free(filter);
			return fail("json-each: expected KEY=VALUE, got %s", argv[2]);
		}
		*(char *)want++ = '\0';
		want_key = filter;
	}
	doc = read_stdin("json-each");
	if (!doc) {
		free(filter);
		return 1;
	}
	/* runc prints "null" rather than [] when there are no containers. */
	if (doc->kind != JSON_ARRAY && doc->kind != JSON_NULL) {
		json_free(doc);
		free(filter);
		return fail("json-each: expected a JSON array");
	}
	for (const struct json *item = doc->child; item; item = item->next) {
		const struct json *v = want_key ? json_member(item, want_key) : NULL;

		if (want_key && !(v && v->kind == JSON_STRING && strcmp(v->text, want) == 0))
			continue;
		print_scalar(json_member(item, argv[1]));
	}
	json_free(doc);
	free(filter);
	return 0;
}
