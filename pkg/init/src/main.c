/* pkgtool-init: dispatch on the program name (/init) or the first argument. */
#include <stdio.h>
#include <string.h>

#include "pkgtool-init.h"

static int usage(void)
{
	fputs("usage: pkgtool-init mount TYPE DIR OPTIONS... | modaliases STATEFILE | runtime RUNTIME.json | json-get KEY |"
	      " json-each FIELD [KEY=VALUE]\n       (as /init: the system's first program)\n", stderr);
	return 2;
}

int main(int argc, char **argv)
{
	const char *name = argc > 0 ? strrchr(argv[0], '/') : NULL;

	name = name ? name + 1 : (argc > 0 ? argv[0] : "");
	if (strcmp(name, "init") == 0)
		return cmd_init(argc, argv);
	if (argc < 2)
		return usage();
	if (strcmp(argv[1], "mount") == 0)
		return cmd_mount(argc - 1, argv + 1);
	if (strcmp(argv[1], "modaliases") == 0)
		return cmd_modaliases(argc - 1, argv + 1);
	if (strcmp(argv[1], "runtime") == 0)
		return cmd_runtime(argc - 1, argv + 1);
	if (strcmp(argv[1], "json-get") == 0)
		return cmd_json_get(argc - 1, argv + 1);
	if (strcmp(argv[1], "json-each") == 0)
		return cmd_json_each(argc - 1, argv + 1);
	return usage();
}
