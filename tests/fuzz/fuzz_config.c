/* fuzz_config.c — config_load() on arbitrary files.
 *
 * The loader reads a path, so each input is written to a file of this
 * process (/tmp/mailfeed-fuzz-config-PID.conf) first.  Secrets are not
 * checked: that would read files and run *_command values named by the
 * input.  Besides memory errors this checks the loader's promise: a config
 * comes back exactly when no problem was found, and every problem is
 * reported as "FILE:LINE: message" for this file. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mailfeed/config.h"

static char path[64];

static void remove_input(void) { unlink(path); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mf_diag diag = {0};
	struct mf_config *cfg;
	size_t plen;
	FILE *fp;

	if (!path[0]) {
		snprintf(path, sizeof path, "/tmp/mailfeed-fuzz-config-%ld.conf", (long)getpid());
		atexit(remove_input);
	}
	plen = strlen(path);
	/* a fresh file rather than a truncated one: ext4 flushes truncated
	 * files on close, which would make every run wait for the disk */
	unlink(path);
	fp = fopen(path, "wb");
	if (!fp)
		abort();
	if (size && fwrite(data, 1, size, fp) != size)
		abort();
	if (fclose(fp) != 0)
		abort();

	cfg = config_load(path, 0, &diag);
	if ((cfg != NULL) != (diag.msgs.n == 0))
		abort();
	for (size_t i = 0; i < diag.msgs.n; i++) {
		const char *m = diag.msgs.v[i];
		if (strncmp(m, path, plen) != 0 || m[plen] != ':')
			abort();
	}
	config_free(cfg);
	diag_free(&diag);
	return 0;
}
