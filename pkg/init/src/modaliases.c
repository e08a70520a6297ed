/* pkgtool-init modaliases STATEFILE: the modalias strings of the devices present that
 * STATEFILE does not list yet, one per line, sorted; they are then added to STATEFILE.
 *
 * Without udev, this is how the drivers of the devices present get loaded: rcS hands the
 * strings to `modprobe -a` (which resolves them through modules.alias, honouring
 * /etc/modprobe.d), then asks again, since a loaded driver can bring new devices (virtio_pci
 * finds the virtio devices, which need virtio_net, virtio_blk, ...), until nothing is new.
 *
 * Where the strings are: every device on a bus (/sys/bus/BUS/devices/DEV/modalias), and the
 * three kinds of device outside a bus that the kernel gives a modalias: input devices
 * (/sys/class/input/DEV), the DMI identity (/sys/class/dmi/id) and the CPU's features
 * (/sys/devices/system/cpu).  That is what a walk of the whole /sys/devices tree finds,
 * for a few hundred file opens instead of thousands of stat calls, which under emulation
 * took most of a second.  Each sysfs lookup still costs a fraction of a millisecond under
 * emulation, so the devices already looked at are remembered too (STATEFILE.devices) and
 * a later pass opens only the new ones: a device's modalias never changes.
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
	int sorted; /* items[0..sorted) are sorted and searchable */
};

static int add(struct set *s, const char *text)
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
	copy = strdup(text);
	if (!copy)
		return -1;
	s->items[s->n++] = copy;
	return 0;
}

static int compare(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void sort(struct set *s)
{
	qsort(s->items, s->n, sizeof(char *), compare);
	s->sorted = (int)s->n;
}

static int contains(const struct set *s, const char *text)
{
	return bsearch(&text, s->items, (size_t)s->sorted, sizeof(char *), compare) != NULL;
}

/* The state file's lines as a sorted set (a missing file is an empty set). */
static int load(struct set *s, const char *path)
{
	size_t len;
	char *text = read_all(path, &len);

	if (!text)
		return errno == ENOENT ? 0 : fail("%s: cannot read it: %m", path);
	for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"))
		if (*line && add(s, line) != 0)
			return fail("out of memory");
	free(text);
	sort(s);
	return 0;
}

struct scan {
	struct set seen_devices, new_devices, aliases;
};

/* Read the modalias of device NAME (relative to directory fd DIR), known as KEY in the
 * state file, unless KEY was looked at in an earlier pass. */
static int device(struct scan *sc, int dir, const char *name, const char *key)
{
	char buf[4096], path[512];
	ssize_t n;
	int fd;

	if (contains(&sc->seen_devices, key))
		return 0;
	if (add(&sc->new_devices, key) != 0)
		return -1;
	snprintf(path, sizeof(path), "%s/modalias", name);
	fd = openat(dir, path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0; /* most devices have no modalias */
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	return buf[0] ? add(&sc->aliases, buf) : 0;
}

/* Every entry of directory PATH is a device; KIND prefixes their keys. */
static int devices_in(struct scan *sc, const char *path, const char *kind)
{
	char key[512];
	struct dirent *entry;
	DIR *dir = opendir(path);
	int status = 0;

	if (!dir)
		return 0;
	while (!status && (entry = readdir(dir))) {
		if (entry->d_name[0] == '.')
			continue;
		snprintf(key, sizeof(key), "%s/%s", kind, entry->d_name);
		status = device(sc, dirfd(dir), entry->d_name, key);
	}
	closedir(dir);
	return status;
}

static int scan_buses(struct scan *sc)
{
	char path[512], kind[300];
	struct dirent *bus;
	DIR *buses = opendir("/sys/bus");
	int status = 0;

	if (!buses)
		return 0;
	while (!status && (bus = readdir(buses))) {
		if (bus->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/sys/bus/%s/devices", bus->d_name);
		snprintf(kind, sizeof(kind), "bus/%s", bus->d_name);
		status = devices_in(sc, path, kind);
	}
	closedir(buses);
	return status;
}

/* A single device directory (DMI identity, the CPU subsystem). */
static int one_device(struct scan *sc, const char *path)
{
	return device(sc, AT_FDCWD, path, path);
}

static int append(const struct set *s, const char *path)
{
	FILE *out = fopen(path, "ae");

	if (!out)
		return fail("%s: cannot write it: %m", path);
	for (size_t i = 0; i < s->n; i++)
		fprintf(out, "%s\n", s->items[i]);
	return fclose(out) == 0 ? 0 : fail("%s: cannot write it: %m", path);
}

int cmd_modaliases(int argc, char **argv)
{
	struct scan sc = { 0 };
	struct set seen = { 0 }, fresh = { 0 };
	char devices_file[4096];

	if (argc != 2)
		return fail("usage: pkgtool-init modaliases STATEFILE");
	snprintf(devices_file, sizeof(devices_file), "%s.devices", argv[1]);
	if (load(&seen, argv[1]) || load(&sc.seen_devices, devices_file))
		return 1;
	if (scan_buses(&sc) || devices_in(&sc, "/sys/class/input", "class/input")
	    || one_device(&sc, "/sys/class/dmi/id") || one_device(&sc, "/sys/devices/system/cpu"))
		return fail("modaliases: out of memory");
	sort(&sc.aliases);
	for (size_t i = 0; i < sc.aliases.n; i++) {
		const char *alias = sc.aliases.items[i];

		if ((i > 0 && strcmp(alias, sc.aliases.items[i - 1]) == 0) || contains(&seen, alias))
			continue;
		if (add(&fresh, alias) != 0)
			return fail("modaliases: out of memory");
		puts(alias);
	}
	if (fflush(stdout) != 0)
		return fail("modaliases: writing: %m");
	return append(&fresh, argv[1]) || append(&sc.new_devices, devices_file);
}
