/* parse_bench.c — parse + clean + thread throughput over a Maildir.
 *
 * usage: parse_bench MAILDIR [--worker]
 * Reads every file of MAILDIR/new and MAILDIR/cur, parses it (MIME, charset,
 * HTML, reply cleaning, hashtags, subject normalisation) and threads the whole
 * set (JWZ).  With --worker each message goes through the sandboxed parse
 * worker process, as in the daemon.  Prints one line: msgs, MB, seconds,
 * msgs/s, MB/s. */
#include <dirent.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailfeed/cli.h"
#include "mailfeed/config.h"
#include "mailfeed/message.h"
#include "mailfeed/mime.h"
#include "mailfeed/thread.h"
#include "mailfeed/util.h"
#include "mailfeed/worker.h"

struct ids {
	char *id;
	char *subject;
	char **refs;
	size_t nrefs;
};

int main(int argc, char **argv)
{
	const char *sub[] = {"new", "cur"};
	int use_worker = argc > 2 && strcmp(argv[2], "--worker") == 0;
	struct parse_worker *w = NULL;
	struct mf_gateway gw = {.parse_timeout = 20, .parse_memory = 512LL << 20};
	size_t count = 0, bytes = 0, cap = 0;
	struct ids *all = NULL;
	double t0;

	/* the heap setting of mailfeed's main(), for both sides */
	mallopt(M_TRIM_THRESHOLD, 1 << 20);
	/* the worker re-executes this binary */
	if (argc > 1 && strcmp(argv[1], "parse-worker") == 0)
		return cmd_parse_worker(argc - 1, argv + 1, "");
	if (argc < 2) {
		fprintf(stderr, "usage: parse_bench MAILDIR [--worker]\n");
		return 2;
	}
	if (use_worker)
		w = worker_new(&gw);
	t0 = now_monotonic();
	for (int s = 0; s < 2; s++) {
		char *dir = xasprintf("%s/%s", argv[1], sub[s]);
		DIR *d = opendir(dir);
		struct dirent *e;
		while (d && (e = readdir(d))) {
			if (e->d_name[0] == '.')
				continue;
			char *path = xasprintf("%s/%s", dir, e->d_name);
			size_t len;
			char *raw = file_read_all(path, &len);
			free(path);
			if (!raw)
				continue;
			struct mf_message *m = NULL;
			char err[256];
			if (use_worker) {
				if (worker_parse(w, raw, len, &m, err, sizeof err) != 0)
					m = NULL;
			} else {
				m = mime_parse(raw, len, err, sizeof err);
			}
			free(raw);
			bytes += len;
			count++;
			if (!m)
				continue;
			if (count > cap) {
				cap = cap ? cap * 2 : 1024;
				all = xrealloc(all, cap * sizeof *all);
			}
			struct ids *x = &all[count - 1];
			x->id = xstrdup(m->message_id ? m->message_id : "");
			x->subject = xstrdup(m->subject ? m->subject : "");
			x->nrefs = m->references.n + (m->in_reply_to ? 1 : 0);
			x->refs = xcalloc(x->nrefs + 1, sizeof *x->refs);
			for (size_t i = 0; i < m->references.n; i++)
				x->refs[i] = xstrdup(m->references.v[i]);
			if (m->in_reply_to)
				x->refs[m->references.n] = xstrdup(m->in_reply_to);
			message_free(m);
		}
		if (d)
			closedir(d);
		free(dir);
	}
	struct jwz_msg *jm = xcalloc(count ? count : 1, sizeof *jm);
	for (size_t i = 0; i < count; i++)
		jm[i] = (struct jwz_msg){.message_id = all[i].id,
					 .subject = all[i].subject,
					 .references = (const char *const *)all[i].refs,
					 .n_references = all[i].nrefs};
	FILE *devnull = fopen("/dev/null", "w");
	thread_jwz_print(jm, count, devnull);
	fclose(devnull);
	double dt = now_monotonic() - t0;
	printf("%zu msgs %.1f MB %.2f s %.0f msgs/s %.1f MB/s\n", count, bytes / 1e6, dt,
	       count / dt, bytes / 1e6 / dt);
	for (size_t i = 0; i < count; i++) {
		free(all[i].id);
		free(all[i].subject);
		for (size_t k = 0; k < all[i].nrefs; k++)
			free(all[i].refs[k]);
		free(all[i].refs);
	}
	free(all);
	free(jm);
	worker_free(w);
	return 0;
}
