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
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/uio.h>
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
/* Messages written ahead of the one being parsed; the socket buffer
 * bounds the bytes. */
#define WINDOW 8
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

/* Where the stream of one batch to the current child stands.  Messages
 * are written ahead of the one being parsed, so that the child never waits
 * for the daemon and the daemon reads one answer while the child works on
 * the next message. */
struct stream {
	struct worker_job *jobs;
	size_t n;
	size_t head;	 /* first job without an answer */
	size_t sent;	 /* jobs written completely */
	size_t sent_off; /* bytes of jobs[sent] written, its length included */
	int send_failed; /* the child stopped reading: read what it wrote */
	unsigned char len_in[sizeof(uint64_t)];
	size_t len_got;	 /* bytes of the answer's length read */
	uint64_t need;	 /* the answer's length, once read */
	size_t got;	 /* bytes of the answer read */
	double deadline; /* for the answer to jobs[head] */
};

static void job_set(struct worker_job *j, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void job_set(struct worker_job *j, int rc, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(j->reason, sizeof j->reason, fmt, ap);
	va_end(ap);
	j->rc = rc;
}

/* The child is gone or hung while parsing jobs[head]: that message is
 * poison. */
static void blame_head(struct parse_worker *w, struct stream *s, int timed_out)
{
	struct worker_job *j = &s->jobs[s->head++];
	int status = worker_stop(w, timed_out);
	if (timed_out)
		job_set(j, 1, "parser timed out after %ld s", w->timeout);
	else
		death_reason(status, j->reason, sizeof j->reason);
	j->rc = 1;
	log_warn("parse.poison reason=\"%s\"", j->reason);
}

/* Writes what the socket takes of jobs[sent]: 0, or -1 when the child no
 * longer reads. */
static int stream_send(struct parse_worker *w, struct stream *s)
{
	const struct worker_job *j = &s->jobs[s->sent];
	uint64_t len = j->len;
	struct iovec iov[2];
	size_t k = 0;
	if (s->sent_off < sizeof len) {
		iov[k].iov_base = (char *)&len + s->sent_off;
		iov[k++].iov_len = sizeof len - s->sent_off;
		iov[k].iov_base = (void *)j->raw;
		iov[k++].iov_len = j->len;
	} else {
		iov[k].iov_base = (void *)(j->raw + (s->sent_off - sizeof len));
		iov[k++].iov_len = j->len - (s->sent_off - sizeof len);
	}
	struct msghdr mh = {.msg_iov = iov, .msg_iovlen = k};
	ssize_t r = sendmsg(w->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
	if (r < 0)
		return errno == EINTR || errno == EAGAIN ? 0 : -1;
	s->sent_off += (size_t)r;
	if (s->sent_off == sizeof len + j->len) {
		s->sent++;
		s->sent_off = 0;
	}
	return 0;
}

/* Reads what is there of the answer to jobs[head]: 1 when it is complete,
 * 0 when more is to come, -1 when the child is gone, -2 when the length it
 * announces cannot be right (the reason is set). */
static int stream_recv(struct parse_worker *w, struct stream *s)
{
	struct buf *ans = &w->answer;
	for (;;) {
		ssize_t r;
		if (s->len_got < sizeof s->len_in)
			r = recv(w->fd, s->len_in + s->len_got, sizeof s->len_in - s->len_got,
				 MSG_DONTWAIT);
		else
			r = recv(w->fd, ans->data + s->got, (size_t)s->need - s->got, MSG_DONTWAIT);
		if (r < 0)
			return errno == EINTR || errno == EAGAIN ? 0 : -1;
		if (r == 0)
			return -1;
		if (s->len_got < sizeof s->len_in) {
			s->len_got += (size_t)r;
			if (s->len_got < sizeof s->len_in)
				continue;
			memcpy(&s->need, s->len_in, sizeof s->need);
			if (s->need == 0 || s->need > ANSWER_MAX((uint64_t)s->jobs[s->head].len)) {
				job_set(&s->jobs[s->head], -1,
					"parse worker answered with %llu bytes; restarted",
					(unsigned long long)s->need);
				return -2;
			}
			if (ans->cap < s->need + 1) {
				buf_free(ans);
				ans->data = xmalloc((size_t)s->need + 1);
				ans->cap = (size_t)s->need + 1;
			}
			s->got = 0;
			continue;
		}
		s->got += (size_t)r;
		if (s->got == s->need)
			return 1;
	}
}

/* Reads the complete answer to jobs[head]: 0, or -1 when it was unusable
 * (the child is stopped). */
static int stream_answer(struct parse_worker *w, struct stream *s)
{
	struct worker_job *j = &s->jobs[s->head++];
	struct buf *ans = &w->answer;
	const char *frame = ans->data + 1;
	size_t flen = (size_t)s->need - 1;
	int rc = 0;
	if (ans->data[0] == 'E' && utf8_valid(frame, flen)) {
		job_set(j, 1, "%.*s", (int)(flen < 4096 ? flen : 4096), frame);
	} else if (ans->data[0] == 'M' && (j->msg = message_decode(frame, flen)) != NULL) {
		j->rc = 0;
	} else {
		worker_stop(w, 1);
		job_set(j, -1, "parse worker answered an unusable message; restarted");
		rc = -1;
	}
	if (ans->cap > KEEP_BUFFER)
		buf_free(ans);
	s->len_got = 0;
	s->need = 0;
	s->got = 0;
	s->deadline = now_monotonic() + (double)w->timeout;
	return rc;
}

/* Runs the jobs from s->head on through the current child until all have
 * their answer or the child had to be stopped (the job to blame has its
 * outcome then). */
static void stream_run(struct parse_worker *w, struct stream *s)
{
	s->deadline = now_monotonic() + (double)w->timeout;
	while (s->head < s->n) {
		int want_out = !s->send_failed && s->sent < s->n && s->sent < s->head + WINDOW;
		double left = s->deadline - now_monotonic();
		if (left <= 0) {
			blame_head(w, s, 1);
			return;
		}
		struct pollfd pf = {.fd = w->fd, .events = POLLIN | (want_out ? POLLOUT : 0)};
		int r = poll(&pf, 1, (int)(left * 1000) + 1);
		if (r < 0 && errno != EINTR) {
			worker_stop(w, 1);
			job_set(&s->jobs[s->head++], -1, "cannot wait for the parse worker: %s",
				strerror(errno));
			return;
		}
		if (r <= 0)
			continue;
		if ((pf.revents & (POLLOUT | POLLERR | POLLHUP)) && want_out &&
		    stream_send(w, s) < 0)
			s->send_failed = 1;
		if (!(pf.revents & (POLLIN | POLLERR | POLLHUP)))
			continue;
		int got = stream_recv(w, s);
		if (got == -1) {
			blame_head(w, s, 0);
			return;
		}
		if (got == -2) {
			worker_stop(w, 1);
			s->head++;
			return;
		}
		if (got == 1 && stream_answer(w, s) < 0)
			return;
	}
}

void worker_parse_batch(struct parse_worker *w, struct worker_job *jobs, size_t n)
{
	struct stream s;
	memset(&s, 0, sizeof s);
	s.jobs = jobs;
	s.n = n;
	for (size_t i = 0; i < n; i++) {
		jobs[i].msg = NULL;
		jobs[i].rc = -1;
		jobs[i].reason[0] = 0;
	}
	while (s.head < n) {
		if (w->pid < 0 &&
		    worker_spawn(w, jobs[s.head].reason, sizeof jobs[s.head].reason) < 0) {
			for (size_t i = s.head + 1; i < n; i++)
				memcpy(jobs[i].reason, jobs[s.head].reason, sizeof jobs[i].reason);
			return;
		}
		/* a fresh child starts from the first job without an answer */
		s.sent = s.head;
		s.sent_off = 0;
		s.send_failed = 0;
		s.len_got = 0;
		s.need = 0;
		s.got = 0;
		stream_run(w, &s);
	}
}

int worker_parse(struct parse_worker *w, const char *raw, size_t len, struct mf_message **out,
		 char *reason, size_t reasonlen)
{
	struct worker_job j = {.raw = raw, .len = len};
	worker_parse_batch(w, &j, 1);
	*out = j.msg;
	snprintf(reason, reasonlen, "%s", j.reason);
	return j.rc;
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
