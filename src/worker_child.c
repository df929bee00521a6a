/* worker_child.c — the parse worker's own loop (`mailfeed parse-worker`).
 *
 * Started by the supervisor (worker.c) with its socket on 0 and 1: it reads
 * length-prefixed raw messages and answers each with a frame, 'M' and the
 * message's wire form or 'E' and why it could not be parsed, under CPU,
 * memory, file and core limits. */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <unistd.h>

#include "mailfeed/cli.h"
#include "mailfeed/convert.h"
#include "mailfeed/log.h"
#include "mailfeed/mime.h"
#include "mailfeed/sandbox.h"
#include "mailfeed/util.h"
#include "mailfeed/worker_frame.h"

#if defined(__SANITIZE_ADDRESS__)
#define WORKER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WORKER_ASAN 1
#endif
#endif

static int write_full(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n > 0) {
		ssize_t k = write(fd, c, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		c += k;
		n -= (size_t)k;
	}
	return 0;
}

static void set_limit(int resource, rlim_t soft, rlim_t hard)
{
	struct rlimit rl = {.rlim_cur = soft, .rlim_max = hard};
	if (setrlimit(resource, &rl) < 0)
		log_warn("parse_worker.rlimit resource=%d error=%s", resource,
			 LOG_Q(strerror(errno)));
}

/* CPU seconds used so far; the CPU limit is moved as messages are parsed,
 * so that a long-lived worker is not killed by its history. */
static rlim_t cpu_used(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (rlim_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + 1);
}

/* Reads the options and sets the limits every parse runs under: no core,
 * no file written, few descriptors and (but under AddressSanitizer) the
 * address space.  Returns the per-message timeout in seconds. */
static long child_limits(int argc, char **argv)
{
	long timeout = 20;
	long long memory = 512LL * 1024 * 1024;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--timeout"))
			timeout = atol(argv[i + 1]);
		else if (!strcmp(argv[i], "--memory"))
			memory = atoll(argv[i + 1]);
	}
	if (timeout <= 0)
		timeout = 20;
	/* A log written to a file must not kill us under RLIMIT_FSIZE. */
	signal(SIGXFSZ, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	set_limit(RLIMIT_CORE, 0, 0);
	set_limit(RLIMIT_FSIZE, 0, 0);
	set_limit(RLIMIT_NOFILE, 32, 32);
#ifndef WORKER_ASAN
	set_limit(RLIMIT_AS, (rlim_t)memory, (rlim_t)memory);
#else
	/* AddressSanitizer reserves terabytes of address space up front, so an
	 * address-space limit would stop the sanitized build from running at
	 * all; the wall-clock deadline of the parent still applies. */
	(void)memory;
#endif
	return timeout;
}

/* Reads the next message frame from the socket, with room for a NUL after
 * it.  Returns 1 with *raw and *n, or 0 with the exit status: 0 at EOF
 * between messages (the daemon is done), 1 for a broken or oversized
 * frame, 3 when memory ran out. */
static int frame_next(struct inbox *in, uint64_t *n, char **raw, int *status)
{
	*raw = NULL;
	while (!inbox_frame_len(in, n) || !(*raw = inbox_frame(in, *n))) {
		int have_len = in->len - in->off >= sizeof *n;
		if (have_len && *n > (uint64_t)1 << 31) {
			*status = 1;
			return 0;
		}
		/* room for all of the message (and its NUL) at once */
		if (have_len &&
		    inbox_reserve(in, sizeof *n + (size_t)*n + 1 - (in->len - in->off)) < 0) {
			*status = 3;
			return 0;
		}
		ssize_t r = inbox_fill(in, 0, 0);
		if (r == -2)
			*status = 3;
		else if (r < 0 || (r == 0 && in->len > in->off))
			*status = 1;
		if (r <= 0)
			return 0;
	}
	/* the parser wants a NUL after the message */
	if (*raw + *n == in->data + in->cap) {
		if (inbox_reserve(in, 1) < 0) {
			*status = 3;
			return 0;
		}
		*raw = inbox_frame(in, *n);
	}
	return 1;
}

/* CPU time grows no faster than the wall clock in this one thread: a limit
 * of what is used plus the timeout and a second, moved once a second,
 * leaves every message at least the timeout. */
static void cpu_limit_move(long timeout, double *armed)
{
	if (now_monotonic() - *armed >= 1) {
		set_limit(RLIMIT_CPU, cpu_used() + (rlim_t)timeout + 1, RLIM_INFINITY);
		*armed = now_monotonic();
	}
}

/* The answer frame: its length, then 'M' and the message or 'E' and why
 * it could not be parsed. */
static void frame_build(struct buf *out, const struct mf_message *m, const char *err)
{
	uint64_t len = 0;
	buf_reset(out);
	buf_append(out, &len, sizeof len);
	if (m) {
		buf_putc(out, 'M');
		message_encode(m, out);
	} else {
		buf_putc(out, 'E');
		buf_puts(out, err);
	}
	len = out->len - sizeof len;
	memcpy(out->data, &len, sizeof len);
}

int cmd_parse_worker(int argc, char **argv, const char *config)
{
	long timeout = child_limits(argc, argv);
	/* Nothing but the socket (0, 1) and the log pipe (2) stays open, and
	 * nothing else may be opened from here on. */
	char why[256];
	sandbox_preload();
	if (sandbox_enter(why, sizeof why) < 0) {
		log_error("parse_worker.sandbox error=%s", LOG_Q(why));
		return WORKER_EXIT_NO_SANDBOX;
	}
	struct inbox in = {0};
	struct buf out;
	int status = 0;
	double armed = -2;
	uint64_t n = 0;
	char *raw;
	buf_init(&out);
	while (frame_next(&in, &n, &raw, &status)) {
		char after = raw[n];
		raw[n] = 0;
		cpu_limit_move(timeout, &armed);
		char err[256] = "";
		struct mf_message *m = mime_parse(raw, (size_t)n, err, sizeof err);
		if (m)
			convert_message(m);
		raw[n] = after;
		inbox_consume(&in, n);
		frame_build(&out, m, err);
		message_free(m);
		if (write_full(1, out.data, out.len) < 0) {
			status = 1;
			break;
		}
		if (out.cap > KEEP_BUFFER)
			buf_free(&out);
	}
	free(in.data);
	buf_free(&out);
#ifdef WORKER_ASAN
	/* LeakSanitizer's check at exit stops the process with ptrace, which
	 * the sandbox forbids: leave without it. */
	fflush(NULL);
	_exit(status);
#endif
	return status;
}
