/* parse_bench.c — parse + clean + thread throughput over a Maildir.
 *
 * usage: parse_bench MAILDIR [--worker]
 * Reads every file of MAILDIR/new and MAILDIR/cur, parses it (MIME, charset,
 * HTML, reply cleaning, hashtags, subject normalisation) and threads the whole
 * set (JWZ).  With --worker the messages go through the sandboxed parse
 * worker process, as in the daemon: streamed to it, the next files being
 * read while it parses.  Only what threading needs is kept of each message.
 * Prints one line: msgs, MB, seconds, msgs/s, MB/s. */
#include <dirent.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailfeed/cli.h"
#include "mailfeed/config.h"
#include "mailfeed/convert.h"
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

struct run {
	const char *maildir;
	int sub; /* 0: new, 1: cur, 2: done */
	DIR *dir;
	size_t files, bytes, count, cap;
	struct ids *all;
};

/* The next message file as a job, or NULL when all have been read. */
static struct worker_job *next_file(void *ctx)
{
	static const char *sub[] = {"new", "cur"};
	struct run *r = ctx;
	while (r->sub < 2) {
		if (!r->dir) {
			char *path = xasprintf("%s/%s", r->maildir, sub[r->sub]);
			r->dir = opendir(path);
			free(path);
			if (!r->dir) {
				r->sub++;
				continue;
			}
		}
		struct dirent *e = readdir(r->dir);
		if (!e) {
			closedir(r->dir);
			r->dir = NULL;
			r->sub++;
			continue;
		}
		if (e->d_name[0] == '.')
			continue;
		char *path = xasprintf("%s/%s/%s", r->maildir, sub[r->sub], e->d_name);
		size_t len;
		char *raw = file_read_all(path, &len);
		free(path);
		if (!raw)
			continue;
		r->files++;
		r->bytes += len;
		struct worker_job *j = xcalloc(1, sizeof *j);
		j->raw = raw;
		j->len = len;
		return j;
	}
	return NULL;
}

/* Keeps what threading needs of the parsed message; frees the rest. */
static void done_file(void *ctx, struct worker_job *j)
{
	struct run *r = ctx;
	struct mf_message *m = j->msg;
	if (m) {
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
	free((char *)j->raw);
	free(j);
}

int main(int argc, char **argv)
{
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
	r.maildir = argv[1];
	t0 = now_monotonic();
	if (argc > 2 && strcmp(argv[2], "--worker") == 0) {
		struct parse_worker *w = worker_new(&gw);
		struct worker_feed feed = {next_file, done_file, &r};
		worker_parse_stream(w, &feed);
		worker_free(w);
	} else {
		struct worker_job *j;
		while ((j = next_file(&r)) != NULL) {
			j->msg = mime_parse(j->raw, j->len, j->reason, sizeof j->reason);
			if (j->msg)
				convert_message(j->msg);
			done_file(&r, j);
		}
	}
	struct jwz_msg *jm = xcalloc(r.count ? r.count : 1, sizeof *jm);
	for (size_t i = 0; i < r.count; i++)
		jm[i] = (struct jwz_msg){.message_id = r.all[i].id,
					 .subject = r.all[i].subject,
					 .references = (const char *const *)r.all[i].refs,
					 .n_references = r.all[i].nrefs};
	FILE *devnull = fopen("/dev/null", "w");
	thread_jwz_print(jm, r.count, devnull);
	fclose(devnull);
	double dt = now_monotonic() - t0;
	printf("%zu msgs %.1f MB %.2f s %.0f msgs/s %.1f MB/s\n", r.files, r.bytes / 1e6, dt,
	       r.files / dt, r.bytes / 1e6 / dt);
	for (size_t i = 0; i < r.count; i++) {
		free(r.all[i].id);
		free(r.all[i].subject);
		for (size_t k = 0; k < r.all[i].nrefs; k++)
			free(r.all[i].refs[k]);
		free(r.all[i].refs);
	}
	free(r.all);
	free(jm);
	return 0;
}
