/* pkgtool-init mount TYPE DIR OPTIONS [TYPE DIR OPTIONS]...: mount each pseudo file system
 * (source = TYPE) on DIR, creating DIR, unless something is mounted on DIR already; in
 * order, so /proc comes first and tells what is mounted.  OPTIONS are comma-separated,
 * as for mount(8): the flag words below become mount flags, the rest (mode=, gid=, ...) the
 * file system's data.  rcS mounts the API file systems with one call instead of a program
 * per mount.  A mount that fails is reported ("init: cannot mount ...") and the others are
 * still tried; the exit status is then 1.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include "pkgtool-init.h"

static const struct {
	const char *name;
	unsigned long flag;
} FLAGS[] = {
	{ "ro", MS_RDONLY }, { "nosuid", MS_NOSUID }, { "nodev", MS_NODEV }, { "noexec", MS_NOEXEC },
	{ "sync", MS_SYNCHRONOUS }, { "noatime", MS_NOATIME }, { "nodiratime", MS_NODIRATIME },
	{ "relatime", MS_RELATIME }, { "strictatime", MS_STRICTATIME },
};

/* Split OPTIONS into mount flags and the data string (written to DATA). */
static unsigned long parse_options(const char *options, char *data, size_t size)
{
	unsigned long flags = 0;
	char *copy = strdup(options), *word, *rest = copy;

	data[0] = '\0';
	while (copy && (word = strsep(&rest, ","))) {
		size_t i;

		if (!*word || strcmp(word, "rw") == 0 || strcmp(word, "defaults") == 0)
			continue;
		for (i = 0; i < sizeof(FLAGS) / sizeof(FLAGS[0]) && strcmp(FLAGS[i].name, word) != 0; i++)
			;
		if (i < sizeof(FLAGS) / sizeof(FLAGS[0])) {
			flags |= FLAGS[i].flag;
		} else {
			if (data[0])
				strncat(data, ",", size - strlen(data) - 1);
			strncat(data, word, size - strlen(data) - 1);
		}
	}
	free(copy);
	return flags;
}

static int mounted(const char *dir)
{
	char line[4096], device[1024], point[1024];
	int found = 0;
	FILE *mounts = fopen("/proc/mounts", "re");

	if (!mounts)
		return 0; /* no /proc yet: nothing can be known to be mounted */
	while (!found && fgets(line, sizeof(line), mounts))
		found = sscanf(line, "%1023s %1023s", device, point) == 2 && strcmp(point, dir) == 0;
	fclose(mounts);
	return found;
}

static int mkdirs(const char *dir)
{
	char path[1024];

	snprintf(path, sizeof(path), "%s", dir);
	for (char *slash = strchr(path + 1, '/');; slash = strchr(slash + 1, '/')) {
		if (slash)
			*slash = '\0';
		if (mkdir(path, 0755) != 0 && errno != EEXIST)
			return -1;
		if (!slash)
			return 0;
		*slash = '/';
	}
}

int cmd_mount(int argc, char **argv)
{
	int status = 0;

	if (argc < 4 || (argc - 1) % 3 != 0)
		return fail("usage: pkgtool-init mount TYPE DIR OPTIONS [TYPE DIR OPTIONS]...");
	for (int i = 1; i < argc; i += 3) {
		const char *type = argv[i], *dir = argv[i + 1];
		char data[1024];
		unsigned long flags = parse_options(argv[i + 2], data, sizeof(data));

		if (dir[0] != '/')
			return fail("mount: %s: expected an absolute directory", dir);
		if (mounted(dir))
			continue;
		if (mkdirs(dir) != 0 || mount(type, dir, type, flags, data[0] ? data : NULL) != 0) {
			fprintf(stderr, "init: cannot mount %s on %s: %s\n", type, dir, strerror(errno));
			status = 1;
		}
	}
	return status;
}
