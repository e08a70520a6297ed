/* pkgtool-init runtime FILE: runtime.json (LinuxKit's format, as `pkgtool image build`
 * writes it next to each bundle's config.json) as lines the bundle script reads with
 * `IFS=$US read`, fields separated by FIELD_SEP (US, \037), in the order they apply:
 *
 *   interfaces US N           when the container asks for N > 0 network interfaces
 *   mkdir US PATH             a host directory to create
 *   cgroup US PATH            a cgroup directory, relative to /sys/fs/cgroup
 *   mount US SOURCE US DESTINATION US TYPE US OPTIONS   options joined with commas
 *   bindns US NAMESPACE US PATH   (entries with an empty path are left out)
 *
 * A missing key is an empty list.  A value of the wrong type, or a string holding a newline,
 * a NUL or US (which would break the line format), is an error: the container is then not
 * started, rather than started with a mount or directory silently missing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pkgtool-init.h"

static const char *file;

static int clean(const struct json *v, const char *what)
{
	if (!v || v->kind != JSON_STRING)
		return fail("%s: %s: expected a string", file, what);
	if (strlen(v->text) != v->len || strchr(v->text, '\n') || strchr(v->text, FIELD_SEP))
		return fail("%s: %s: a value holds a newline, a NUL or \\037", file, what);
	return 0;
}

static const struct json *list(const struct json *rt, const char *key, int *bad)
{
	const struct json *v = json_member(rt, key);

	if (!v || v->kind == JSON_NULL)
		return NULL;
	if (v->kind != JSON_ARRAY) {
		*bad = fail("%s: %s: expected a list", file, key);
		return NULL;
	}
	return v->child;
}

static int print_paths(const struct json *rt, const char *key, const char *tag)
{
	int bad = 0;

	for (const struct json *item = list(rt, key, &bad); item; item = item->next) {
		if (clean(item, key))
			return 1;
		printf("%s%c%s\n", tag, FIELD_SEP, item->text);
	}
	return bad;
}

static int print_mounts(const struct json *rt)
{
	int bad = 0;

	for (const struct json *m = list(rt, "mounts", &bad); m; m = m->next) {
		const char *fields[] = { "source", "destination", "type" };
		const struct json *options;

		if (m->kind != JSON_OBJECT)
			return fail("%s: mounts: expected objects", file);
		if (!json_member(m, "destination"))
			return fail("%s: mounts: an entry has no destination", file);
		fputs("mount", stdout);
		for (size_t i = 0; i < 3; i++) {
			const struct json *v = json_member(m, fields[i]);

			if (v && v->kind != JSON_NULL && clean(v, fields[i]))
				return 1;
			printf("%c%s", FIELD_SEP, v && v->kind == JSON_STRING ? v->text : "");
		}
		putchar(FIELD_SEP);
		options = json_member(m, "options");
		if (options && options->kind != JSON_NULL && options->kind != JSON_ARRAY)
			return fail("%s: mounts: options: expected a list", file);
		for (const struct json *o = options ? options->child : NULL; o; o = o->next) {
			if (clean(o, "options"))
				return 1;
			printf("%s%s", o == options->child ? "" : ",", o->text);
		}
		putchar('\n');
	}
	return bad;
}

static int print_bindns(const struct json *rt)
{
	const struct json *ns = json_member(rt, "bindNS");

	if (!ns || ns->kind == JSON_NULL)
		return 0;
	if (ns->kind != JSON_OBJECT)
		return fail("%s: bindNS: expected a mapping", file);
	for (const struct json *entry = ns->child; entry; entry = entry->next) {
		if (clean(entry, entry->key))
			return 1;
		if (entry->len)
			printf("bindns%c%s%c%s\n", FIELD_SEP, entry->key, FIELD_SEP, entry->text);
	}
	return 0;
}

int cmd_runtime(int argc, char **argv)
{
	const char *error = NULL;
	const struct json *interfaces;
	struct json *rt;
	size_t len;
	char *text;
	int status;

	if (argc != 2)
		return fail("usage: pkgtool-init runtime RUNTIME.json");
	file = argv[1];
	text = read_all(file, &len);
	if (!text)
		return fail("%s: cannot read it: %m", file);
	rt = json_parse(text, len, &error);
	free(text);
	if (!rt)
		return fail("%s: not JSON: %s", file, error);
	if (rt->kind != JSON_OBJECT) {
		json_free(rt);
		return fail("%s: expected a JSON object", file);
	}
	interfaces = json_member(rt, "interfaces");
	if (interfaces && interfaces->kind == JSON_ARRAY && interfaces->child) {
		size_t n = 0;

		for (const struct json *i = interfaces->child; i; i = i->next)
			n++;
		printf("interfaces%c%zu\n", FIELD_SEP, n);
	}
	status = print_paths(rt, "mkdir", "mkdir") || print_paths(rt, "cgroups", "cgroup")
		 || print_mounts(rt) || print_bindns(rt);
	json_free(rt);
	if (fflush(stdout) != 0)
		return fail("writing the output: %m");
	return status;
}
