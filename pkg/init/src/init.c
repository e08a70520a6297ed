/* /init: the first program the kernel runs from the initramfs, as PID 1.
 *
 * runc cannot pivot_root out of the kernel's initial root file system (rootfs: pivot_root
 * needs the old root to be a mount with a parent, and rootfs has none), and every container
 * needs that.  The earlier shell /init copied the whole tree onto a new tmpfs, one file at a
 * time, which under emulation took most of the boot.  Here the root is switched without
 * copying: bind-mount rootfs onto a directory inside itself, move that mount over "/" and
 * chroot into it, as switch_root does with a real root file system.  The new root is the
 * same tmpfs (the kernel backs rootfs with tmpfs when no root= is given) with the same files,
 * but now as a mount that has a parent, which is all pivot_root asks for.
 *
 * Then busybox init takes over: /etc/inittab runs /etc/init.d/rcS at boot and
 * /etc/init.d/rcK at shutdown.  Booted from a real root file system (the kernel did not
 * start us from rootfs), go straight to busybox init.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pkgtool-init.h"

#define BUSYBOX_INIT "/sbin/init"
#define SWITCH_DIR "/.root"

/* Whether "/" is the kernel's rootfs: the last "/" entry of /proc/mounts has type rootfs. */
static int root_is_rootfs(void)
{
	char line[4096], device[1024], point[1024], type[64];
	int rootfs = 0;
	FILE *mounts = fopen("/proc/mounts", "re");

	if (!mounts)
		return 0;
	while (fgets(line, sizeof(line), mounts))
		if (sscanf(line, "%1023s %1023s %63s", device, point, type) == 3 && strcmp(point, "/") == 0)
			rootfs = strcmp(type, "rootfs") == 0;
	fclose(mounts);
	return rootfs;
}

static void say(const char *message)
{
	fprintf(stderr, "init: %s\n", message);
}

/* Make "/" a bind mount of rootfs over itself; 0 on success. */
static int switch_root_in_place(void)
{
	if (mkdir(SWITCH_DIR, 0700) != 0 && errno != EEXIST)
		return -1;
	if (mount("/", SWITCH_DIR, NULL, MS_BIND, NULL) != 0)
		return -1;
	if (chdir(SWITCH_DIR) != 0 || mount(".", "/", NULL, MS_MOVE, NULL) != 0 || chroot(".") != 0 || chdir("/") != 0)
		return -1;
	/* The mount point directory is visible again in the new root, empty: tidy it away. */
	rmdir(SWITCH_DIR);
	return 0;
}

int cmd_init(int argc, char **argv)
{
	char *const init_argv[] = { "init", NULL };
	int rootfs;

	(void)argc;
	(void)argv;
	if (getpid() != 1) {
		fputs("init: /init must run as PID 1 (the kernel starts it); to shut down, run poweroff\n", stderr);
		return 1;
	}
	setenv("PATH", "/usr/sbin:/usr/bin:/sbin:/bin", 1);
	mkdir("/proc", 0555);
	if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0)
		say("cannot mount /proc; assuming the root is not the initramfs");
	rootfs = root_is_rootfs();
	/* rcS mounts /proc again in the new root; this one would stay behind, hidden. */
	umount2("/proc", MNT_DETACH);
	if (rootfs && switch_root_in_place() != 0) {
		fprintf(stderr, "init: cannot make the initramfs a root runc can use (%s); containers will not start\n",
			strerror(errno));
	}
	execv(BUSYBOX_INIT, init_argv);
	fprintf(stderr, "init: cannot run %s: %s\n", BUSYBOX_INIT, strerror(errno));
	return 1;
}
