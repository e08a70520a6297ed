/* A small JSON reader (RFC 8259): recursive descent into a tree of struct json.
 *
 * Inputs are runtime.json (written by `pkgtool image build`, at most a few KB) and runc's
 * `state` and `list -f json` output, so simplicity beats speed.  Strings are unescaped to
 * UTF-8 (\uXXXX, surrogate pairs included); numbers are kept as their literal text.
 * Nesting is bounded, and trailing garbage is an error.
 */
#include <stdlib.h>
#include <string.h>

#include "pkgtool-init.h"

#define MAX_DEPTH 64

struct parser {
	const char *p, *end;
	const char *error;
	int depth;
};

static void skip_space(struct parser *ps)
{
	while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
		ps->p++;
}

static struct json *node(enum json_kind kind)
{
	struct json *v = calloc(1, sizeof(*v));

	if (v)
		v->kind = kind;
	return v;
}

static int hex4(const char *s, unsigned *out)
{
	unsigned v = 0;

	for (int i = 0; i < 4; i++) {
		char c = s[i];
		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v |= (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			v |= (unsigned)(c - 'A' + 10);
		else
			return -1;
	}
	*out = v;
	return 0;
}

static size_t put_utf8(char *out, unsigned cp)
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xC0 | (cp >> 6));
		out[1] = (char)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xE0 | (cp >> 12));
		out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
		out[2] = (char)(0x80 | (cp & 0x3F));
		return 3;
	}
	out[0] = (char)(0xF0 | (cp >> 18));
	out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
	out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
	out[3] = (char)(0x80 | (cp & 0x3F));
	return 4;
}

/* Parse a string at ps->p (on the opening quote); returns a malloc'd UTF-8 copy. */
static char *parse_string(struct parser *ps, size_t *len)
{
	const char *start = ++ps->p;
	char *out, *w;

	/* Unescaping never makes a string longer than its source text. */
	while (ps->p < ps->end && *ps->p != '"') {
		if (*ps->p == '\\')
			ps->p++;
		ps->p++;
	}
	if (ps->p >= ps->end) {
		ps->error = "unterminated string";
		return NULL;
	}
	out = malloc((size_t)(ps->p - start) + 1);
	if (!out) {
		ps->error = "out of memory";
		return NULL;
	}
	w = out;
	for (const char *r = start; r < ps->p; r++) {
		unsigned char c = (unsigned char)*r;
		unsigned cp, low;

		if (c < 0x20) {
			ps->error = "control character in string";
			free(out);
			return NULL;
		}
		if (c != '\\') {
			*w++ = (char)c;
			continue;
		}
		switch (*++r) {
		case '"': *w++ = '"'; break;
		case '\\': *w++ = '\\'; break;
		case '/': *w++ = '/'; break;
		case 'b': *w++ = '\b'; break;
		case 'f': *w++ = '\f'; break;
		case 'n': *w++ = '\n'; break;
		case 'r': *w++ = '\r'; break;
		case 't': *w++ = '\t'; break;
		case 'u':
			if (ps->p - r < 5 || hex4(r + 1, &cp) != 0)
				goto bad_escape;
			r += 4;
			if (cp >= 0xD800 && cp < 0xDC00) {
				if (ps->p - r < 7 || r[1] != '\\' || r[2] != 'u' || hex4(r + 3, &low) != 0
				    || low < 0xDC00 || low > 0xDFFF)
					goto bad_escape;
				cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
				r += 6;
			} else if (cp >= 0xDC00 && cp < 0xE000) {
				goto bad_escape;
			}
			w += put_utf8(w, cp);
			break;
		default:
			goto bad_escape;
		}
	}
	*w = '\0';
	*len = (size_t)(w - out);
	ps->p++; /* the closing quote */
	return out;
bad_escape:
	ps->error = "bad escape in string";
	free(out);
	return NULL;
}

static struct json *parse_value(struct parser *ps);

static struct json *parse_container(struct parser *ps, enum json_kind kind, char close)
{
	struct json *v = node(kind), **tail;

	if (!v) {
		ps->error = "out of memory";
		return NULL;
	}
	if (++ps->depth > MAX_DEPTH) {
		ps->error = "nested too deeply";
		free(v);
		return NULL;
	}
	tail = &v->child;
	ps->p++;
	skip_space(ps);
	if (ps->p < ps->end && *ps->p == close) {
		ps->p++;
		ps->depth--;
		return v;
	}
	for (;;) {
		char *key = NULL;
		size_t key_len;
		struct json *item;

		skip_space(ps);
		if (kind == JSON_OBJECT) {
			if (ps->p >= ps->end || *ps->p != '"') {
				ps->error = "expected a member name";
				break;
			}
			key = parse_string(ps, &key_len);
			if (!key)
				break;
			skip_space(ps);
			if (ps->p >= ps->end || *ps->p != ':') {
				ps->error = "expected ':'";
				free(key);
				break;
			}
			ps->p++;
		}
		item = parse_value(ps);
		if (!item) {
			free(key);
			break;
		}
		item->key = key;
		*tail = item;
		tail = &item->next;
		skip_space(ps);
		if (ps->p < ps->end && *ps->p == ',') {
			ps->p++;
			continue;
		}
		if (ps->p < ps->end && *ps->p == close) {
			ps->p++;
			ps->depth--;
			return v;
		}
		ps->error = kind == JSON_OBJECT ? "expected ',' or '}'" : "expected ',' or ']'";
		break;
	}
	json_free(v);
	return NULL;
}

static struct json *parse_literal(struct parser *ps, const char *word, enum json_kind kind)
{
	size_t n = strlen(word);

	if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0) {
		ps->error = "unexpected character";
		return NULL;
	}
	ps->p += n;
	return node(kind);
}

static struct json *parse_number(struct parser *ps)
{
	const char *start = ps->p;
	struct json *v;

	if (ps->p < ps->end && *ps->p == '-')
		ps->p++;
	while (ps->p < ps->end && strchr("0123456789.eE+-", *ps->p))
		ps->p++;
	if (ps->p == start || (ps->p - start == 1 && *start == '-')) {
		ps->error = "unexpected character";
		return NULL;
	}
	v = node(JSON_NUMBER);
	if (v) {
		v->len = (size_t)(ps->p - start);
		v->text = strndup(start, v->len);
	}
	if (!v || !v->text) {
		free(v);
		ps->error = "out of memory";
		return NULL;
	}
	return v;
}

static struct json *parse_value(struct parser *ps)
{
	struct json *v;

	skip_space(ps);
	if (ps->p >= ps->end) {
		ps->error = "unexpected end of input";
		return NULL;
	}
	switch (*ps->p) {
	case '{': return parse_container(ps, JSON_OBJECT, '}');
	case '[': return parse_container(ps, JSON_ARRAY, ']');
	case 't': return parse_literal(ps, "true", JSON_TRUE);
	case 'f': return parse_literal(ps, "false", JSON_FALSE);
	case 'n': return parse_literal(ps, "null", JSON_NULL);
	case '"':
		v = node(JSON_STRING);
		if (!v) {
			ps->error = "out of memory";
			return NULL;
		}
		v->text = parse_string(ps, &v->len);
		if (!v->text) {
			free(v);
			return NULL;
		}
		return v;
	default:
		return parse_number(ps);
	}
}

struct json *json_parse(const char *text, size_t len, const char **error)
{
	struct parser ps = { text, text + len, NULL, 0 };
	struct json *v = parse_value(&ps);

	if (v) {
		skip_space(&ps);
		if (ps.p != ps.end) {
			json_free(v);
			v = NULL;
			ps.error = "trailing characters after the value";
		}
	}
	if (!v && error)
		*error = ps.error ? ps.error : "invalid JSON";
	return v;
}

struct json *json_member(const struct json *object, const char *key)
{
	if (!object || object->kind != JSON_OBJECT)
		return NULL;
	for (struct json *m = object->child; m; m = m->next)
		if (strcmp(m->key, key) == 0)
			return m;
	return NULL;
}

void json_free(struct json *value)
{
	while (value) {
		struct json *next = value->next;

		json_free(value->child);
		free(value->text);
		free(value->key);
		free(value);
		value = next;
	}
}
