/* test_sandbox.c — the parse worker's confinement, seen from outside: once
 * a process has entered the sandbox it still parses every message of the
 * test corpora, keeps no descriptor but its socket and log, cannot open or
 * create a file, and is killed (SIGSYS) when it tries to open a socket,
 * signal its parent or run a program.  The corpus goes through the real
 * worker (this binary run as `parse-worker`); each other case runs in a
 * forked child that reports what it saw on its fd 1 (a pipe to the test). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "mailfeed/cli.h"
#include "mailfeed/convert.h"
#include "mailfeed/log.h"
#include "mailfeed/message.h"
#include "mailfeed/mime.h"
#include "mailfeed/sandbox.h"
#include "mailfeed/util.h"
#include "mailfeed/worker.h"

struct child {
	pid_t pid;
	int out; /* what the child wrote on its fd 1 */
	int err; /* its fd 2 */
};

/* Runs fn in a child whose fd 0 is /dev/null, 1 and 2 pipes to us; fn
 * enters the sandbox itself (so that it may prepare things first). */
static struct child spawn(void (*fn)(void *), void *arg)
{
	int o[2], e[2];
	assert_int_equal(pipe(o), 0);
	assert_int_equal(pipe(e), 0);
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int null = open("/dev/null", O_RDONLY);
		dup2(null, 0);
		dup2(o[1], 1);
		dup2(e[1], 2);
		close(null);
		close(o[0]);
		close(e[0]);
		close(o[1]);
		close(e[1]);
		fn(arg);
		_exit(0);
	}
	close(o[1]);
	close(e[1]);
	return (struct child){pid, o[0], e[0]};
}

/* Everything the child wrote on fd (until EOF), NUL-terminated. */
static char *slurp(int fd)
{
	struct buf b;
	buf_init(&b);
	char chunk[4096];
	ssize_t n;
	while ((n = read(fd, chunk, sizeof chunk)) > 0)
		buf_append(&b, chunk, (size_t)n);
	buf_putc(&b, 0);
	close(fd);
	return buf_steal(&b);
}

/* Reaps the child; its output in *out (may be NULL), its wait status back. */
static int finish(struct child c, char **out, char **err)
{
	char *o = slurp(c.out), *e = slurp(c.err);
	int status;
	while (waitpid(c.pid, &status, 0) < 0 && errno == EINTR)
		;
	if (out)
		*out = o;
	else
		free(o);
	if (err)
		*err = e;
	else
		free(e);
	return status;
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if (write(1, line, (size_t)n) < 0)
		_exit(2);
}

static void enter(void)
{
	char err[256];
	sandbox_preload();
	if (sandbox_enter(err, sizeof err) < 0) {
		say("sandbox failed: %s\n", err);
		_exit(3);
	}
}

static int killed_by_sigsys(int status)
{
	return WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS;
}

/* ---- parsing still works ------------------------------------------------ */

struct corpus {
	char **raw;
	size_t *len;
	size_t n;
};

static void corpus_add_dir(struct corpus *c, const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		char *path = xasprintf("%s/%s", dir, e->d_name);
		struct stat st;
		if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
			corpus_add_dir(c, path);
		} else if (strlen(e->d_name) > 4 &&
			   !strcmp(e->d_name + strlen(e->d_name) - 4, ".eml")) {
			struct buf b;
			buf_init(&b);
			FILE *f = fopen(path, "rb");
			if (f) {
				char chunk[8192];
				size_t n;
				while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
					buf_append(&b, chunk, n);
				fclose(f);
				c->raw = xrealloc(c->raw, (c->n + 1) * sizeof *c->raw);
				c->len = xrealloc(c->len, (c->n + 1) * sizeof *c->len);
				c->len[c->n] = b.len;
				buf_putc(&b, 0);
				c->raw[c->n++] = buf_steal(&b);
			} else {
				buf_free(&b);
			}
		}
		free(path);
	}
	closedir(d);
}

/* In the sandbox, parses every message of the corpus as it is parsed
 * outside, and says how many gave the same text. */
static void parse_corpus(void *arg)
{
	struct corpus *c = arg;
	enter();
	size_t same = 0;
	for (size_t i = 0; i < c->n; i++) {
		char err[256] = "";
		struct mf_message *m = mime_parse(c->raw[i], c->len[i], err, sizeof err);
		if (m) {
			struct buf b;
			buf_init(&b);
			message_encode(m, &b);
			/* the wire form is compared by the parent: send its length */
			say("%zu %zu\n", i, b.len);
			buf_free(&b);
			same++;
		} else {
			say("%zu E %s\n", i, err);
		}
		message_free(m);
	}
	say("parsed %zu of %zu\n", same, c->n);
	_exit(0);
}

static void test_corpus_parses_in_sandbox(void **state)
{
	struct corpus c = {0};
	corpus_add_dir(&c, "tests/corpus");
	corpus_add_dir(&c, "tests/fixtures");
	assert_true(c.n >= 100);
	/* what the same parser makes of each message outside the sandbox */
	struct buf expect;
	buf_init(&expect);
	size_t ok = 0;
	for (size_t i = 0; i < c.n; i++) {
		char err[256] = "";
		struct mf_message *m = mime_parse(c.raw[i], c.len[i], err, sizeof err);
		if (m) {
			struct buf b;
			buf_init(&b);
			message_encode(m, &b);
			buf_printf(&expect, "%zu %zu\n", i, b.len);
			buf_free(&b);
			ok++;
		} else {
			buf_printf(&expect, "%zu E %s\n", i, err);
		}
		message_free(m);
	}
	buf_printf(&expect, "parsed %zu of %zu\n", ok, c.n);
	buf_putc(&expect, 0);

	char *out, *err;
	int status = finish(spawn(parse_corpus, &c), &out, &err);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_string_equal(out, expect.data);
	free(out);
	free(err);
	buf_free(&expect);
	for (size_t i = 0; i < c.n; i++)
		free(c.raw[i]);
	free(c.raw);
	free(c.len);
}

/* The same through the parse worker as the daemon runs it: a fresh
 * process (this binary as `parse-worker`) that sets up, enters the sandbox
 * and only then sees mail — nothing it loads lazily may be missing. */
static void test_corpus_through_the_worker(void **state)
{
	struct corpus c = {0};
	corpus_add_dir(&c, "tests/corpus");
	corpus_add_dir(&c, "tests/fixtures");
	assert_true(c.n >= 100);
	struct worker_job *jobs = xcalloc(c.n, sizeof *jobs);
	for (size_t i = 0; i < c.n; i++) {
		jobs[i].raw = c.raw[i];
		jobs[i].len = c.len[i];
	}
	struct mf_gateway gw;
	memset(&gw, 0, sizeof gw);
	gw.parse_timeout = 20;
	gw.max_message_size = 25LL * 1024 * 1024;
	struct parse_worker *w = worker_new(&gw);
	worker_parse_batch(w, jobs, c.n);
	worker_free(w);
	for (size_t i = 0; i < c.n; i++) {
		char err[256] = "";
		struct mf_message *m = mime_parse(c.raw[i], c.len[i], err, sizeof err);
		if (m)
			convert_message(m); /* as the worker does */
		if (!m) {
			assert_int_equal(jobs[i].rc, 1);
			assert_string_equal(jobs[i].reason, err);
			continue;
		}
		if (jobs[i].rc != 0)
			fail_msg("message %zu: %s", i, jobs[i].reason);
		struct buf a, b;
		buf_init(&a);
		buf_init(&b);
		message_encode(m, &a);
		message_encode(jobs[i].msg, &b);
		assert_int_equal(a.len, b.len);
		assert_memory_equal(a.data, b.data, a.len);
		buf_free(&a);
		buf_free(&b);
		message_free(m);
		message_free(jobs[i].msg);
	}
	free(jobs);
	for (size_t i = 0; i < c.n; i++)
		free(c.raw[i]);
	free(c.raw);
	free(c.len);
}

/* ---- what a taken-over worker cannot do -------------------------------- */

static void open_file(void *arg)
{
	enter();
	int fd = open((const char *)arg, O_RDONLY);
	say("open=%d errno=%d\n", fd, fd < 0 ? errno : 0);
	_exit(0);
}

static void test_cannot_read_files(void **state)
{
	char path[] = "/tmp/mf-sandbox-secret-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "hunter2\n", 8), 8);
	close(fd);
	char *out;
	int status = finish(spawn(open_file, path), &out, NULL);
	unlink(path);
	assert_true(WIFEXITED(status));
	char want[64];
	snprintf(want, sizeof want, "open=-1 errno=%d\n", EACCES);
	assert_string_equal(out, want);
	free(out);
}

static void create_file(void *arg)
{
	enter();
	int fd = open((const char *)arg, O_WRONLY | O_CREAT | O_EXCL, 0600);
	say("create=%d errno=%d\n", fd, fd < 0 ? errno : 0);
	_exit(0);
}

static void test_cannot_write_files(void **state)
{
	char dir[] = "/tmp/mf-sandbox-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char *path = xasprintf("%s/dropped", dir);
	char *out;
	int status = finish(spawn(create_file, path), &out, NULL);
	assert_true(WIFEXITED(status));
	assert_non_null(strstr(out, "create=-1"));
	assert_int_equal(access(path, F_OK), -1);
	free(out);
	free(path);
	rmdir(dir);
}

static void open_socket(void *arg)
{
	enter();
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	say("socket=%d\n", fd);
	_exit(0);
}

static void test_socket_kills(void **state)
{
	char *out;
	int status = finish(spawn(open_socket, NULL), &out, NULL);
	assert_true(killed_by_sigsys(status));
	assert_string_equal(out, "");
	free(out);
}

static volatile sig_atomic_t got_usr1;
static void on_usr1(int sig) { got_usr1 = sig; }

static void signal_parent(void *arg)
{
	pid_t parent = getppid(); /* learnt before: getppid itself is not allowed */
	enter();
	kill(parent, SIGUSR1);
	say("signalled\n");
	_exit(0);
}

static void test_signal_parent_kills(void **state)
{
	struct sigaction sa = {.sa_handler = on_usr1};
	sigaction(SIGUSR1, &sa, NULL);
	got_usr1 = 0;
	char *out;
	int status = finish(spawn(signal_parent, NULL), &out, NULL);
	assert_true(killed_by_sigsys(status));
	assert_string_equal(out, "");
	assert_int_equal(got_usr1, 0);
	free(out);
	signal(SIGUSR1, SIG_DFL);
}

static void run_program(void *arg)
{
	enter();
	char *argv[] = {"/bin/true", NULL};
	execv(argv[0], argv);
	say("exec failed\n");
	_exit(0);
}

static void test_exec_kills(void **state)
{
	char *out;
	int status = finish(spawn(run_program, NULL), &out, NULL);
	assert_true(killed_by_sigsys(status));
	free(out);
}

/* The child holds the only write end of a pipe when it enters the
 * sandbox; we see EOF on it while the child still lives: it was closed. */
static void hold_pipe(void *arg)
{
	int *p = arg;
	close(p[0]);
	enter();
	char c;
	ssize_t n = read(0, &c, 1); /* /dev/null: EOF at once; then wait */
	(void)n;
	for (volatile int spin = 1; spin;)
		; /* until the test kills us */
}

static void test_other_descriptors_closed(void **state)
{
	int p[2];
	assert_int_equal(pipe(p), 0);
	struct child c = spawn(hold_pipe, p);
	close(p[1]);
	struct pollfd pf = {.fd = p[0], .events = POLLIN};
	assert_int_equal(poll(&pf, 1, 10000), 1);
	char x;
	assert_int_equal(read(p[0], &x, 1), 0);
	/* still running: the EOF came from the sandbox, not from exiting */
	assert_int_equal(waitpid(c.pid, NULL, WNOHANG), 0);
	kill(c.pid, SIGKILL);
	finish(c, NULL, NULL);
	close(p[0]);
}

/* With debug logging the worker says whether it got its namespaces. */
static void log_namespaces(void *arg)
{
	log_set_level(LOG_LVL_DEBUG);
	enter();
	_exit(0);
}

static void test_namespaces_logged(void **state)
{
	char *err;
	int status = finish(spawn(log_namespaces, NULL), NULL, &err);
	assert_true(WIFEXITED(status));
	assert_non_null(strstr(err, "parse_worker.sandbox namespaces="));
	free(err);
}

int main(int argc, char **argv)
{
	if (argc > 1 && !strcmp(argv[1], "parse-worker"))
		return cmd_parse_worker(argc - 1, argv + 1, "");
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_corpus_through_the_worker),
	    cmocka_unit_test(test_corpus_parses_in_sandbox),
	    cmocka_unit_test(test_cannot_read_files),
	    cmocka_unit_test(test_cannot_write_files),
	    cmocka_unit_test(test_socket_kills),
	    cmocka_unit_test(test_signal_parent_kills),
	    cmocka_unit_test(test_exec_kills),
	    cmocka_unit_test(test_other_descriptors_closed),
	    cmocka_unit_test(test_namespaces_logged),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
