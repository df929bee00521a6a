/* fuzz_thread.c — subject normalisation and the JWZ threader on arbitrary
 * input.
 *
 * Each input line is "subject<TAB>message-id<TAB>reference reference …".
 * Besides memory errors this checks that the threader prints every message
 * exactly once (no message lost in reference loops or duplicates) and that
 * normalising is idempotent. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailfeed/thread.h"

#define MAX_MSGS 64
#define MAX_REFS 16

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *in = xstrndup((const char *)data, size), *save = NULL, *out = NULL;
	struct jwz_msg msgs[MAX_MSGS];
	const char *refs[MAX_MSGS][MAX_REFS];
	size_t n = 0, outlen = 0, lines = 0;
	FILE *mem;
	char *once, *twice;

	once = thread_subject_normalise(in);
	twice = thread_subject_normalise(once);
	if (strcmp(once, twice) != 0)
		abort();
	free(once);
	free(twice);

	for (char *line = strtok_r(in, "\n", &save); line && n < MAX_MSGS;
	     line = strtok_r(NULL, "\n", &save)) {
		char *id = strchr(line, '\t'), *r, *rsave = NULL;
		struct jwz_msg *m = &msgs[n];
		/* the printed form is one line per message: subjects without
		 * line breaks, never "dummy" */
		m->subject = "m";
		m->message_id = NULL;
		m->references = refs[n];
		m->n_references = 0;
		if (id) {
			*id++ = 0;
			r = strchr(id, '\t');
			if (r)
				*r++ = 0;
			m->message_id = id;
			for (char *t = r ? strtok_r(r, " ", &rsave) : NULL;
			     t && m->n_references < MAX_REFS; t = strtok_r(NULL, " ", &rsave))
				refs[n][m->n_references++] = t;
		}
		n++;
	}
	mem = open_memstream(&out, &outlen);
	thread_jwz_print(msgs, n, mem);
	fclose(mem);
	for (char *p = out; p && (p = strstr(p, "m\n")); p += 2)
		if (p == out || p[-1] == ' ' || p[-1] == '\n')
			lines++;
	if (lines != n)
		abort();
	free(out);
	free(in);
	return 0;
}
