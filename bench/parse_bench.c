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

/* Messages read from disk before they are parsed together, as the daemon
 * takes them from its store in batches. */
#define BATCH 64

struct run {
	struct parse_worker *w; /* NULL: parse in-process */
	size_t files, bytes, count, cap;
	struct ids *all;
	struct worker_job jobs[BATCH];
	size_t n;
};

/* Keeps what threading needs of m (and frees m). */
static void keep_ids(struct run *r, struct mf_message *m)
{
	if (r->count == r->cap) {
		r->cap = r->cap ? r->cap * 2 : 1024;
		r->all = xrealloc(r->all, r->cap * sizeof *r->all);
	}
	struct ids *x = &r->all[r->count++];
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

static void parse_batch(struct run *r)
{
	if (r->w)
		worker_parse_batch(r->w, r->jobs, r->n);
	for (size_t i = 0; i < r->n; i++) {
		struct worker_job *j = &r->jobs[i];
		if (!r->w)
			j->msg = mime_parse(j->raw, j->len, j->reason, sizeof j->reason);
		if (j->msg)
			keep_ids(r, j->msg);
		free((char *)j->raw);
	}
	r->n = 0;
}

int main(int argc, char **argv)
{
	const char *sub[] = {"new", "cur"};
	struct mf_gateway gw = {.parse_timeout = 20, .parse_memory = 512LL << 20};
	struct run r;
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
	memset(&r, 0, sizeof r);
	if (argc > 2 && strcmp(argv[2], "--worker") == 0)
		r.w = worker_new(&gw);
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
			r.files++;
			r.bytes += len;
			r.jobs[r.n].raw = raw;
			r.jobs[r.n++].len = len;
			if (r.n == BATCH)
				parse_batch(&r);
		}
		if (d)
			closedir(d);
		free(dir);
	}
	parse_batch(&r);
	size_t count = r.count;
	struct jwz_msg *jm = xcalloc(count ? count : 1, sizeof *jm);
	for (size_t i = 0; i < count; i++)
		jm[i] = (struct jwz_msg){.message_id = r.all[i].id,
					 .subject = r.all[i].subject,
					 .references = (const char *const *)r.all[i].refs,
					 .n_references = r.all[i].nrefs};
	FILE *devnull = fopen("/dev/null", "w");
	thread_jwz_print(jm, count, devnull);
	fclose(devnull);
	double dt = now_monotonic() - t0;
	printf("%zu msgs %.1f MB %.2f s %.0f msgs/s %.1f MB/s\n", r.files, r.bytes / 1e6, dt,
	       r.files / dt, r.bytes / 1e6 / dt);
	for (size_t i = 0; i < count; i++) {
		free(r.all[i].id);
		free(r.all[i].subject);
		for (size_t k = 0; k < r.all[i].nrefs; k++)
			free(r.all[i].refs[k]);
		free(r.all[i].refs);
	}
	free(r.all);
	free(jm);
	worker_free(r.w);
	return 0;
}
