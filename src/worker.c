/* worker.c — the supervisor of the sandboxed parse worker.
 *
 * The daemon never parses mail itself: a parser fed hostile mail (GMime
 * for the MIME tree, libetpan for dates) is where a memory bug or a
 * quadratic path would be met.  Instead a
 * child (`mailfeed parse-worker`, the same executable) reads length-prefixed
 * raw messages on a socket and answers each with a length-prefixed frame:
 * 'M' and the message's wire form (message_encode), or 'E' and why it
 * could not be parsed.  The parent keeps a few messages written ahead, so
 * that both sides work at once.  The child runs with CPU, memory, file and
 * core limits; the parent enforces a wall-clock deadline per message.
 * Whatever the child does with a message — crash, hang, run out of memory —
 * the parent reports that message as poison and hands the ones after it to
 * a fresh child.  The child's own loop is in worker_child.c. */
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
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mailfeed/log.h"
#include "mailfeed/mime.h"
#include "mailfeed/parse_limits.h"
#include "mailfeed/worker.h"
#include "mailfeed/worker_frame.h"

/* Headroom for the answer: the text comes back more than once (as read,
 * cleaned, and what cleaning removed). */
#define ANSWER_MAX(in) ((in)*2 + 16 * 1024 * 1024)
/* Messages written ahead of the one being parsed; the socket buffer
 * bounds the bytes. */
#define WINDOW 8
/* Socket buffers: a window of messages or an answer in one go. */
#define SOCKET_BUFFER (1024 * 1024)
/* Longest wait in one receive call, so that deadlines are checked. */
#define RECV_WAIT_MS 100

struct parse_worker {
	long timeout;
	long long memory;
	long long max_size;
	pid_t pid;
	int fd;
	struct inbox answers; /* reused from one batch to the next */
	void (*tick)(void *arg);
	void *tick_arg;
};

void worker_set_tick(struct parse_worker *w, void (*tick)(void *arg), void *arg)
{
	w->tick = tick;
	w->tick_arg = arg;
}

void worker_get_tick(const struct parse_worker *w, void (**tick)(void *arg), void **arg)
{
	*tick = w->tick;
	*arg = w->tick_arg;
}

struct parse_worker *worker_new(const struct mf_gateway *gw)
{
	struct parse_worker *w = xcalloc(1, sizeof *w);
	w->timeout = gw->parse_timeout;
	w->memory = gw->parse_memory;
	w->max_size = gw->max_message_size;
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
	free(w->answers.data);
	free(w);
}

/* The child keeps no descriptor but its pipes to us, and may write no
 * file (RLIMIT_FSIZE 0): its stderr is a pipe, and this thread copies what
 * comes through (log lines, sanitizer reports) to our stderr — a terminal,
 * the journal or `mailfeed run 2>>log` — until the child is gone. */
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

/* A pipe for the child's stderr, else -1s (the child then inherits ours). */
static void stderr_pipe(int p[2])
{
	pthread_t t;
	pthread_attr_t a;
	p[0] = p[1] = -1;
	if (pipe2(p, O_CLOEXEC) < 0)
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

int inbox_reserve(struct inbox *in, size_t room)
{
	if (in->off == in->len) {
		in->off = in->len = 0;
		/* a buffer grown for one large frame is not kept */
		if (in->cap > KEEP_BUFFER && room <= KEEP_BUFFER) {
			free(in->data);
			in->data = NULL;
			in->cap = 0;
		}
	}
	if (in->cap - in->len >= room)
		return 0;
	if (in->off > 0) {
		memmove(in->data, in->data + in->off, in->len - in->off);
		in->len -= in->off;
		in->off = 0;
		if (in->cap - in->len >= room)
			return 0;
	}
	size_t cap = in->len + room;
	char *p = realloc(in->data, cap);
	if (!p)
		return -1;
	in->data = p;
	in->cap = cap;
	return 0;
}

ssize_t inbox_fill(struct inbox *in, int fd, int flags)
{
	if (inbox_reserve(in, READ_CHUNK) < 0)
		return -2;
	ssize_t r;
	do
		r = recv(fd, in->data + in->len, in->cap - in->len, flags);
	while (r < 0 && errno == EINTR);
	if (r > 0)
		in->len += (size_t)r;
	return r;
}

int inbox_frame_len(const struct inbox *in, uint64_t *n)
{
	if (in->len - in->off < sizeof *n)
		return 0;
	memcpy(n, in->data + in->off, sizeof *n);
	return 1;
}

char *inbox_frame(struct inbox *in, uint64_t n)
{
	if (in->len - in->off - sizeof n < n)
		return NULL;
	return in->data + in->off + sizeof n;
}

void inbox_consume(struct inbox *in, uint64_t n) { in->off += sizeof n + (size_t)n; }

static int worker_spawn(struct parse_worker *w, char *reason, size_t reasonlen)
{
	int sv[2], ep[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		snprintf(reason, reasonlen, "cannot create the parse worker socket: %s",
			 strerror(errno));
		return -1;
	}
	int size = SOCKET_BUFFER;
	for (int i = 0; i < 2; i++) {
		setsockopt(sv[i], SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
		setsockopt(sv[i], SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
	}
	struct timeval wait = {.tv_usec = RECV_WAIT_MS * 1000};
	setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof wait);
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

/* Where a stream of messages to the current child stands.  Messages are
 * written ahead of the one being parsed, so that the child never waits for
 * the daemon, and the daemon takes the next messages and reads answers
 * while the child works.  Jobs are numbered in the order they came; the
 * ones not yet done are kept in a ring. */
struct stream {
	const struct worker_feed *feed;
	struct worker_job *ring[WINDOW];
	size_t head;	 /* first job without an answer */
	size_t sent;	 /* jobs written completely */
	size_t taken;	 /* jobs taken from the feed */
	int drained;	 /* the feed has no more */
	size_t sent_off; /* bytes of job `sent` written, its length included */
	int send_failed; /* the child stopped reading: read what it wrote */
	double deadline; /* for the answer to job `head` */
};

static struct worker_job *job_at(struct stream *s, size_t i) { return s->ring[i % WINDOW]; }

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

/* Job `head` has its outcome: hand it back. */
static void head_done(struct parse_worker *w, struct stream *s)
{
	s->feed->done(s->feed->ctx, job_at(s, s->head++));
	s->deadline = now_monotonic() + (double)w->timeout;
}

/* Fills the window from the feed.  A message that would cost the parser
 * more than the limits allow is poison at once: it is done here, before
 * the ones ahead of it, and never reaches the child. */
static void stream_take(struct parse_worker *w, struct stream *s)
{
	while (!s->drained && s->taken < s->head + WINDOW) {
		struct worker_job *j = s->feed->next(s->feed->ctx);
		if (!j) {
			s->drained = 1;
			break;
		}
		j->msg = NULL;
		j->rc = -1;
		j->reason[0] = 0;
		if (parse_limits_check(j->raw, j->len, (size_t)w->max_size, NULL, j->reason,
				       sizeof j->reason) < 0) {
			j->rc = 1;
			log_warn("parse.refused reason=%s", LOG_Q(j->reason));
			s->feed->done(s->feed->ctx, j);
			continue;
		}
		s->ring[s->taken++ % WINDOW] = j;
	}
}

/* The child is gone or hung while parsing job `head`: that message is
 * poison. */
static void blame_head(struct parse_worker *w, struct stream *s, int timed_out)
{
	struct worker_job *j = job_at(s, s->head);
	int status = worker_stop(w, timed_out);
	if (!timed_out && WIFEXITED(status) && WEXITSTATUS(status) == WORKER_EXIT_NO_SANDBOX) {
		/* the child would not parse without its sandbox: not the mail's fault */
		job_set(j, -1, "parse worker cannot enter its sandbox (see the log)");
		head_done(w, s);
		return;
	}
	if (timed_out)
		job_set(j, 1, "parser timed out after %ld s", w->timeout);
	else
		death_reason(status, j->reason, sizeof j->reason);
	j->rc = 1;
	log_warn("parse.poison reason=%s", LOG_Q(j->reason));
	head_done(w, s);
}

/* Something went wrong on our side with job `head`: it is not to blame. */
static void fail_head(struct parse_worker *w, struct stream *s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail_head(struct parse_worker *w, struct stream *s, const char *fmt, ...)
{
	struct worker_job *j = job_at(s, s->head);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(j->reason, sizeof j->reason, fmt, ap);
	va_end(ap);
	j->rc = -1;
	worker_stop(w, 1);
	head_done(w, s);
}

/* Writes what the socket takes of the jobs taken and not written yet: 0,
 * or -1 when the child no longer reads. */
static int stream_send(struct parse_worker *w, struct stream *s)
{
	uint64_t lens[WINDOW];
	struct iovec iov[2 * WINDOW];
	size_t k = 0, off = s->sent_off;
	for (size_t i = s->sent; i < s->taken; i++) {
		const struct worker_job *j = job_at(s, i);
		lens[i - s->sent] = j->len;
		if (off < sizeof *lens) {
			iov[k].iov_base = (char *)&lens[i - s->sent] + off;
			iov[k++].iov_len = sizeof *lens - off;
			off = 0;
		} else {
			off -= sizeof *lens;
		}
		iov[k].iov_base = (void *)(j->raw + off);
		iov[k++].iov_len = j->len - off;
		off = 0;
	}
	struct msghdr mh = {.msg_iov = iov, .msg_iovlen = k};
	ssize_t r = sendmsg(w->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
	if (r < 0)
		return errno == EINTR || errno == EAGAIN ? 0 : -1;
	size_t done = (size_t)r + s->sent_off;
	while (s->sent < s->taken && done >= sizeof *lens + job_at(s, s->sent)->len) {
		done -= sizeof *lens + job_at(s, s->sent)->len;
		s->sent++;
	}
	s->sent_off = done;
	return 0;
}

/* Takes the answer to job `head` from frame (n bytes): 0, or -1 when it
 * was unusable (the child is stopped). */
static int stream_answer(struct parse_worker *w, struct stream *s, const char *frame, size_t n)
{
	struct worker_job *j = job_at(s, s->head);
	if (frame[0] == 'E' && utf8_valid(frame + 1, n - 1)) {
		job_set(j, 1, "%.*s", (int)(n - 1 < 4096 ? n - 1 : 4096), frame + 1);
	} else if (frame[0] == 'M' && (j->msg = message_decode(frame + 1, n - 1)) != NULL) {
		j->rc = 0;
	} else {
		fail_head(w, s, "parse worker answered an unusable message; restarted");
		return -1;
	}
	head_done(w, s);
	return 0;
}

/* Reads what the child has written (waiting up to RECV_WAIT_MS for it
 * unless flags say MSG_DONTWAIT) and takes every complete answer: 0 to go
 * on, -1 when the child had to be stopped (the job to blame is done). */
static int stream_recv(struct parse_worker *w, struct stream *s, int flags)
{
	struct inbox *in = &w->answers;
	ssize_t r = inbox_fill(in, w->fd, flags);
	if (r == -2) {
		fail_head(w, s, "no memory for the parse worker's answer");
		return -1;
	}
	if (r < 0 && errno == EAGAIN)
		return 0;
	if (r <= 0) {
		blame_head(w, s, 0);
		return -1;
	}
	uint64_t n;
	while (s->head < s->sent && inbox_frame_len(in, &n)) {
		if (n == 0 || n > ANSWER_MAX((uint64_t)job_at(s, s->head)->len)) {
			fail_head(w, s, "parse worker answered with %llu bytes; restarted",
				  (unsigned long long)n);
			return -1;
		}
		const char *frame = inbox_frame(in, n);
		if (!frame) {
			/* the rest of a large answer goes straight after it */
			if (inbox_reserve(in, sizeof n + (size_t)n - (in->len - in->off)) < 0) {
				fail_head(w, s, "no memory for the parse worker's answer");
				return -1;
			}
			break;
		}
		int rc = stream_answer(w, s, frame, (size_t)n);
		inbox_consume(in, n);
		if (rc < 0)
			return -1;
	}
	return 0;
}

/* Runs the stream through the current child until the feed is drained and
 * every job done, or the child had to be stopped (the job to blame is done
 * then). */
static void stream_run(struct parse_worker *w, struct stream *s)
{
	s->deadline = now_monotonic() + (double)w->timeout;
	for (;;) {
		if (w->tick)
			w->tick(w->tick_arg);
		stream_take(w, s);
		if (s->head == s->taken)
			return;
		if (!s->send_failed && s->sent < s->taken && stream_send(w, s) < 0)
			s->send_failed = 1;
		if (s->send_failed || s->sent == s->taken) {
			/* all there is has been written: wait for answers alone */
			if (stream_recv(w, s, 0) < 0)
				return;
		} else {
			/* the socket is full: wait until it takes more or answers come */
			double left = s->deadline - now_monotonic();
			struct pollfd pf = {.fd = w->fd, .events = POLLIN | POLLOUT};
			int wait = left > 0 ? (int)(left * 1000) + 1 : 0;
			int r = poll(&pf, 1, wait < RECV_WAIT_MS ? wait : RECV_WAIT_MS);
			if (r < 0 && errno != EINTR) {
				fail_head(w, s, "cannot wait for the parse worker: %s",
					  strerror(errno));
				return;
			}
			if (r > 0 && (pf.revents & (POLLIN | POLLERR | POLLHUP)) &&
			    stream_recv(w, s, MSG_DONTWAIT) < 0)
				return;
		}
		/* checked after reading, so that an answer that came is taken */
		if (s->head < s->taken && now_monotonic() >= s->deadline) {
			blame_head(w, s, 1);
			return;
		}
	}
}

void worker_parse_stream(struct parse_worker *w, const struct worker_feed *feed)
{
	struct stream s;
	memset(&s, 0, sizeof s);
	s.feed = feed;
	for (;;) {
		stream_take(w, &s);
		if (s.head == s.taken)
			return;
		char reason[sizeof s.ring[0]->reason];
		if (w->pid < 0 && worker_spawn(w, reason, sizeof reason) < 0) {
			/* no worker: every message waits for the next time */
			for (; s.head < s.taken || !s.drained; stream_take(w, &s)) {
				while (s.head < s.taken) {
					struct worker_job *j = job_at(&s, s.head++);
					memcpy(j->reason, reason, sizeof reason);
					feed->done(feed->ctx, j);
				}
			}
			return;
		}
		/* a fresh child starts from the first job without an answer */
		s.sent = s.head;
		s.sent_off = 0;
		s.send_failed = 0;
		w->answers.off = w->answers.len = 0;
		stream_run(w, &s);
	}
}

/* worker_parse_batch as a feed over an array. */
struct batch {
	struct worker_job *jobs;
	size_t n, next;
};

static struct worker_job *batch_next(void *ctx)
{
	struct batch *b = ctx;
	return b->next < b->n ? &b->jobs[b->next++] : NULL;
}

static void batch_done(void *ctx, struct worker_job *job)
{
	(void)ctx;
	(void)job;
}

void worker_parse_batch(struct parse_worker *w, struct worker_job *jobs, size_t n)
{
	struct batch b = {jobs, n, 0};
	struct worker_feed feed = {batch_next, batch_done, &b};
	worker_parse_stream(w, &feed);
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
