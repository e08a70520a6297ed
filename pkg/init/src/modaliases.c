/* pkgtool-init modaliases STATEFILE: the modalias strings of the devices present that
 * STATEFILE does not list yet, one per line, sorted; they are then added to STATEFILE.
 *
 * Without udev, this is how the drivers of the devices present get loaded: rcS hands the
 * strings to `modprobe -a` (which resolves them through modules.alias, honouring
 * /etc/modprobe.d), then asks again, since a loaded driver can bring new devices (virtio_pci
 * finds the virtio devices, which need virtio_net, virtio_blk, ...), until nothing is new.
 *
 * Where the strings are: every device on a bus (/sys/bus/BUS/devices/DEV/modalias), every
 * class device (/sys/class/CLASS/DEV/modalias: input devices, DMI), and the CPU's features
 * (/sys/devices/system/cpu/modalias).  That is what a walk of the whole /sys/devices tree
 * finds, for a few hundred directory reads instead of thousands of stat calls, which under
 * emulation took most of a second.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pkgtool-init.h"

struct set {
	char **items;
	size_t n, cap;
};

static int add(struct set *s, const char *text, size_t len)
{
	char *copy;

	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 256;
		char **grown = realloc(s->items, cap * sizeof(*grown));

		if (!grown)
			return -1;
		s->items = grown;
		s->cap = cap;
	}
	copy = strndup(text, len);
	if (!copy)
		return -1;
	s->items[s->n++] = copy;
	return 0;
}

static int compare(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int contains(const struct set *sorted, const char *text)
{
	return bsearch(&text, sorted->items, sorted->n, sizeof(char *), compare) != NULL;
}

/* Add the first line of FILE (a modalias attribute) to the set, if there is one. */
static int read_alias(struct set *s, const char *file)
{
	char buf[4096];
	ssize_t n;
	int fd = open(file, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return 0; /* most devices have no modalias */
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	return buf[0] ? add(s, buf, strlen(buf)) : 0;
}

/* For each entry E of directory TOP, read TOP/E/MIDDLE/ENTRY/modalias for each ENTRY of
 * TOP/E/MIDDLE, or TOP/E/modalias when MIDDLE is "". */
static int scan(struct set *s, const char *top, const char *middle)
{
	DIR *outer = opendir(top), *inner;
	struct dirent *a, *b;
	char dir[1024], file[1400];

	if (!outer)
		return 0;
	while ((a = readdir(outer))) {
		if (a->d_name[0] == '.')
			continue;
		snprintf(dir, sizeof(dir), "%s/%s%s%s", top, a->d_name, *middle ? "/" : "", middle);
		if (!*middle) {
			/* TOP/E is the device itself (a class device link) */
			snprintf(file, sizeof(file), "%s/modalias", dir);
			if (read_alias(s, file))
				goto oom;
			continue;
		}
		inner = opendir(dir);
		if (!inner)
			continue;
		while ((b = readdir(inner))) {
			if (b->d_name[0] == '.')
				continue;
			snprintf(file, sizeof(file), "%s/%s/modalias", dir, b->d_name);
			if (read_alias(s, file)) {
				closedir(inner);
				goto oom;
			}
		}
		closedir(inner);
	}
	closedir(outer);
	return 0;
oom:
	closedir(outer);
	return -1;
}

static int scan_classes(struct set *s)
{
	DIR *classes = opendir("/sys/class");
	struct dirent *c;
	char top[512];
	int status = 0;

	if (!classes)
		return 0;
	while (!status && (c = readdir(classes))) {
		if (c->d_name[0] == '.')
			continue;
		snprintf(top, sizeof(top), "/sys/class/%s", c->d_name);
		status = scan(s, top, "");
	}
	closedir(classes);
	return status;
}

static void load_lines(struct set *s, char *text)
{
	for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"))
		if (*line && add(s, line, strlen(line)) != 0)
			break;
}

int cmd_modaliases(int argc, char **argv)
{
	struct set present = { 0 }, seen = { 0 };
	size_t len;
	char *old;
	FILE *state;

	if (argc != 2)
		return fail("usage: pkgtool-init modaliases STATEFILE");
	if (scan(&present, "/sys/bus", "devices") || scan_classes(&present)
	    || read_alias(&present, "/sys/devices/system/cpu/modalias"))
		return fail("modaliases: out of memory");
	qsort(present.items, present.n, sizeof(char *), compare);
	old = read_all(argv[1], &len);
	if (old)
		load_lines(&seen, old);
	else if (errno != ENOENT)
		return fail("%s: cannot read it: %m", argv[1]);
	qsort(seen.items, seen.n, sizeof(char *), compare);
	state = fopen(argv[1], "a");
	if (!state)
		return fail("%s: cannot write it: %m", argv[1]);
	for (size_t i = 0; i < present.n; i++) {
		if ((i > 0 && strcmp(present.items[i], present.items[i - 1]) == 0) || contains(&seen, present.items[i]))
			continue;
		puts(present.items[i]);
		fprintf(state, "%s\n", present.items[i]);
	}
	if (fclose(state) != 0 || fflush(stdout) != 0)
		return fail("modaliases: writing: %m");
	return 0;
}
