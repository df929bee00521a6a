/* worker.c — the sandboxed parse worker and its supervisor.
 *
 * The daemon never parses mail itself: libetpan 1.9.4 has a heap overflow
 * on one Content-Type line and quadratic time on deep nesting.  Instead a
 * child (`mailfeed parse-worker`, the same executable) reads length-prefixed
 * raw messages on a socket and answers each with a length-prefixed frame:
 * 'M' and the message's wire form (message_encode), or 'E' and why it
 * could not be parsed.  The
 * child runs with CPU, memory, file and core limits; the parent enforces a
 * wall-clock deadline.  Whatever the child does with a message — crash,
 * hang, run out of memory — the parent reports that message as poison and
 * starts a fresh child for the next one. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mailfeed/cli.h"
#include "mailfeed/log.h"
#include "mailfeed/mime.h"
#include "mailfeed/worker.h"

#if defined(__SANITIZE_ADDRESS__)
#define WORKER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WORKER_ASAN 1
#endif
#endif

/* Headroom for the answer: the text comes back more than once (as read,
 * cleaned, and what cleaning removed). */
#define ANSWER_MAX(in) ((in)*2 + 16 * 1024 * 1024)
/* Buffers kept between messages are given back above this size. */
#define KEEP_BUFFER (1024 * 1024)

struct parse_worker {
	long timeout;
	long long memory;
	long long max_size;
	pid_t pid;
	int fd;
	struct buf answer; /* reused from one message to the next */
};

struct parse_worker *worker_new(const struct mf_gateway *gw)
{
	struct parse_worker *w = xcalloc(1, sizeof *w);
	w->timeout = gw->parse_timeout > 0 ? gw->parse_timeout : 20;
	w->memory = gw->parse_memory > 0 ? gw->parse_memory : 512LL * 1024 * 1024;
	w->max_size = gw->max_message_size > 0 ? gw->max_message_size : 25LL * 1024 * 1024;
	w->pid = -1;
	w->fd = -1;
	return w;
}

/* Kills and reaps the child; the status tells what became of it. */
static int worker_stop(struct parse_worker *w, int force)
{
	int status = 0;
	if (w->fd >= 0)
		close(w->fd);
	w->fd = -1;
	if (w->pid > 0) {
		if (force)
			kill(w->pid, SIGKILL);
		while (waitpid(w->pid, &status, 0) < 0 && errno == EINTR)
			;
	}
	w->pid = -1;
	return status;
}

void worker_free(struct parse_worker *w)
{
	if (!w)
		return;
	if (w->fd >= 0) {
		/* EOF on its socket makes the child exit; do not wait long. */
		shutdown(w->fd, SHUT_WR);
		struct pollfd p = {.fd = w->fd, .events = POLLIN};
		if (poll(&p, 1, 1000) <= 0)
			kill(w->pid, SIGKILL);
	}
	worker_stop(w, 0);
	buf_free(&w->answer);
	free(w);
}

/* The child may write no file (RLIMIT_FSIZE 0), so when our stderr is a
 * regular file (`mailfeed run 2>>log`) its log lines and sanitizer reports
 * would be lost: it gets a pipe instead, and this thread copies what comes
 * through to our stderr until the child is gone. */
static void *relay_stderr(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char b[4096];
	ssize_t n;
	while ((n = read(fd, b, sizeof b)) > 0 || (n < 0 && errno == EINTR))
		if (n > 0 && write(2, b, (size_t)n) < 0)
			break;
	close(fd);
	return NULL;
}

/* A pipe for the child's stderr when ours is a regular file, else -1s. */
static void stderr_pipe(int p[2])
{
	struct stat st;
	pthread_t t;
	pthread_attr_t a;
	p[0] = p[1] = -1;
	if (fstat(2, &st) < 0 || !S_ISREG(st.st_mode) || pipe2(p, O_CLOEXEC) < 0)
		return;
	pthread_attr_init(&a);
	pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &a, relay_stderr, (void *)(intptr_t)p[0]) != 0) {
		close(p[0]);
		close(p[1]);
		p[0] = p[1] = -1;
	}
	pthread_attr_destroy(&a);
}

static int worker_spawn(struct parse_worker *w, char *reason, size_t reasonlen)
{
	int sv[2], ep[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		snprintf(reason, reasonlen, "cannot create the parse worker socket: %s",
			 strerror(errno));
		return -1;
	}
	char timeout[32], memory[32];
	snprintf(timeout, sizeof timeout, "%ld", w->timeout);
	snprintf(memory, sizeof memory, "%lld", w->memory);
	char *argv[] = {"mailfeed", "parse-worker", "--timeout", timeout, "--memory", memory, NULL};
	stderr_pipe(ep);
	pid_t pid = fork();
	if (pid < 0) {
		snprintf(reason, reasonlen, "cannot start the parse worker: %s", strerror(errno));
		close(sv[0]);
		close(sv[1]);
		if (ep[1] >= 0)
			close(ep[1]); /* the relay sees EOF and ends */
		return -1;
	}
	if (pid == 0) {
		/* Only async-signal-safe calls between fork and exec. */
		if (dup2(sv[1], 0) < 0 || dup2(sv[1], 1) < 0)
			_exit(127);
		if (ep[1] >= 0 && dup2(ep[1], 2) < 0)
			_exit(127);
		for (int fd = 3; fd < 1024; fd++)
			close(fd);
		execv("/proc/self/exe", argv);
		_exit(127);
	}
	close(sv[1]);
	if (ep[1] >= 0)
		close(ep[1]);
	w->pid = pid;
	w->fd = sv[0];
	return 0;
}

/* Sends or receives exactly n bytes before deadline.  0, or -1 with errno
 * (ETIMEDOUT at the deadline, EPIPE when the child went away). */
static int io_full(int fd, void *p, size_t n, int sending, double deadline)
{
	char *c = p;
	while (n > 0) {
		double left = deadline - now_monotonic();
		if (left <= 0) {
			errno = ETIMEDOUT;
			return -1;
		}
		struct pollfd pf = {.fd = fd, .events = sending ? POLLOUT : POLLIN};
		int r = poll(&pf, 1, (int)(left * 1000) + 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0)
			continue;
		ssize_t k = sending ? send(fd, c, n, MSG_NOSIGNAL | MSG_DONTWAIT)
				    : recv(fd, c, n, MSG_DONTWAIT);
		if (k < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (k < 0)
			return -1;
		if (k == 0) {
			errno = EPIPE;
			return -1;
		}
		c += k;
		n -= (size_t)k;
	}
	return 0;
}

/* Why the child is gone, for the poison reason. */
static void death_reason(int status, char *reason, size_t reasonlen)
{
	if (WIFSIGNALED(status)) {
		int sig = WTERMSIG(status);
		if (sig == SIGXCPU)
			snprintf(reason, reasonlen, "parser used too much CPU time");
		else
			snprintf(reason, reasonlen, "parser crashed (signal %d)", sig);
	} else if (WIFEXITED(status) && WEXITSTATUS(status) == 3) {
		snprintf(reason, reasonlen, "parser ran out of memory");
	} else {
		snprintf(reason, reasonlen, "parser crashed (exit status %d)",
			 WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	}
}

int worker_parse(struct parse_worker *w, const char *raw, size_t len, struct mf_message **out,
		 char *reason, size_t reasonlen)
{
	*out = NULL;
	if (w->pid < 0 && worker_spawn(w, reason, reasonlen) < 0)
		return -1;
	double deadline = now_monotonic() + (double)w->timeout;
	uint64_t n = len;
	if (io_full(w->fd, &n, sizeof n, 1, deadline) < 0 ||
	    io_full(w->fd, (void *)raw, len, 1, deadline) < 0 ||
	    io_full(w->fd, &n, sizeof n, 0, deadline) < 0) {
		int timed_out = errno == ETIMEDOUT;
		int status = worker_stop(w, timed_out);
		if (timed_out)
			snprintf(reason, reasonlen, "parser timed out after %ld s", w->timeout);
		else
			death_reason(status, reason, reasonlen);
		log_warn("parse.poison reason=\"%s\"", reason);
		return 1;
	}
	if (n == 0 || n > ANSWER_MAX((uint64_t)len)) {
		worker_stop(w, 1);
		snprintf(reason, reasonlen, "parse worker answered with %llu bytes; restarted",
			 (unsigned long long)n);
		return -1;
	}
	struct buf *ans = &w->answer;
	buf_reset(ans);
	if (ans->cap < n + 1) {
		buf_free(ans);
		ans->data = xmalloc((size_t)n + 1);
		ans->cap = (size_t)n + 1;
	}
	if (io_full(w->fd, ans->data, (size_t)n, 0, deadline) < 0) {
		int timed_out = errno == ETIMEDOUT;
		int status = worker_stop(w, timed_out);
		if (timed_out)
			snprintf(reason, reasonlen, "parser timed out after %ld s", w->timeout);
		else
			death_reason(status, reason, reasonlen);
		return 1;
	}
	const char *frame = ans->data + 1;
	size_t flen = (size_t)n - 1;
	int rc = 0;
	if (ans->data[0] == 'E' && utf8_valid(frame, flen)) {
		snprintf(reason, reasonlen, "%.*s", (int)(flen < 4096 ? flen : 4096), frame);
		rc = 1;
	} else if (ans->data[0] != 'M' || !(*out = message_decode(frame, flen))) {
		worker_stop(w, 1);
		snprintf(reason, reasonlen, "parse worker answered an unusable message; restarted");
		rc = -1;
	}
	if (ans->cap > KEEP_BUFFER)
		buf_free(ans);
	return rc;
}

/* ---- the child --------------------------------------------------------- */

static int read_full(int fd, void *p, size_t n)
{
	char *c = p;
	while (n > 0) {
		ssize_t k = read(fd, c, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		c += k;
		n -= (size_t)k;
	}
	return 0;
}

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
		log_warn("parse_worker.rlimit resource=%d error=\"%s\"", resource, strerror(errno));
}

/* CPU seconds used so far; the CPU limit is moved per message so that a
 * long-lived worker is not killed by its history. */
static rlim_t cpu_used(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (rlim_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + 1);
}

int cmd_parse_worker(int argc, char **argv, const char *config)
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
	/* Nothing but the socket (0, 1) and the log (2) stays open. */
	for (int fd = 3; fd < 1024; fd++)
		close(fd);
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
	struct buf in, out;
	int status = 0;
	buf_init(&in);
	buf_init(&out);
	for (;;) {
		uint64_t n;
		if (read_full(0, &n, sizeof n) < 0)
			break; /* EOF: the daemon is done with us */
		if (n > (uint64_t)1 << 31) {
			status = 1;
			break;
		}
		if (in.cap < n + 1) {
			buf_free(&in);
			in.data = malloc((size_t)n + 1);
			if (!in.data) {
				status = 3;
				break;
			}
			in.cap = (size_t)n + 1;
		}
		if (read_full(0, in.data, (size_t)n) < 0) {
			status = 1;
			break;
		}
		in.data[n] = 0;
		set_limit(RLIMIT_CPU, cpu_used() + (rlim_t)timeout, RLIM_INFINITY);
		char err[256] = "";
		struct mf_message *m = mime_parse(in.data, (size_t)n, err, sizeof err);
		/* the frame: its length, then 'M' and the message or 'E' and why not */
		uint64_t len = 0;
		buf_reset(&out);
		buf_append(&out, &len, sizeof len);
		if (m) {
			buf_putc(&out, 'M');
			message_encode(m, &out);
		} else {
			buf_putc(&out, 'E');
			buf_puts(&out, err);
		}
		message_free(m);
		len = out.len - sizeof len;
		memcpy(out.data, &len, sizeof len);
		if (write_full(1, out.data, out.len) < 0) {
			status = 1;
			break;
		}
		if (in.cap > KEEP_BUFFER)
			buf_free(&in);
		if (out.cap > KEEP_BUFFER)
			buf_free(&out);
	}
	buf_free(&in);
	buf_free(&out);
	return status;
}
