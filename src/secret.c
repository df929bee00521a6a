/* secret.c — reading secrets: private files and token commands.
 *
 * Files are opened once, checked with fstat (regular; see secret_mode_check
 * for who may read it) and read up to SECRET_MAX bytes.  Commands run through
 * posix_spawnp without a shell; stdout is the secret, the first line of
 * stderr explains a failure, and a command that hangs is killed. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mailfeed/secret.h"
#include "mailfeed/util.h"

extern char **environ;

#define READER_GROUPS_MAX 256

/* The user secret files are judged for: the process itself unless
 * secret_judge_for() named another.  Set once, before threads start. */
static struct {
	int set;
	char name[64];
	uid_t uid;
	int n_groups;
	gid_t groups[READER_GROUPS_MAX];
} reader;

int secret_judge_for(const char *user, char *err, size_t errlen)
{
	struct passwd pw, *res = NULL;
	char pwbuf[4096];
	int n = READER_GROUPS_MAX;

	if (getpwnam_r(user, &pw, pwbuf, sizeof pwbuf, &res) != 0 || !res) {
		snprintf(err, errlen, "there is no user %s", user);
		return -1;
	}
	if (getgrouplist(user, pw.pw_gid, reader.groups, &n) < 0) {
		reader.groups[0] = pw.pw_gid;
		n = 1;
	}
	reader.n_groups = n;
	reader.uid = pw.pw_uid;
	snprintf(reader.name, sizeof reader.name, "%s", user);
	reader.set = 1;
	return 0;
}

/* Whether gid is one of the reading user's groups. */
static int reader_in_group(gid_t gid)
{
	if (reader.set) {
		for (int i = 0; i < reader.n_groups; i++)
			if (reader.groups[i] == gid)
				return 1;
		return 0;
	}
	gid_t groups[READER_GROUPS_MAX];
	int n = getgroups(READER_GROUPS_MAX, groups);
	if (gid == getegid())
		return 1;
	for (int i = 0; i < n; i++)
		if (groups[i] == gid)
			return 1;
	return 0;
}

static const char *group_name(gid_t gid, char *buf, size_t len)
{
	struct group gr, *res = NULL;
	char grbuf[4096];
	if (getgrgid_r(gid, &gr, grbuf, sizeof grbuf, &res) == 0 && res)
		snprintf(buf, len, "%s", gr.gr_name);
	else
		snprintf(buf, len, "%u", (unsigned)gid);
	return buf;
}

/* The reading user's name, for messages. */
static const char *reader_label(char *buf, size_t len)
{
	struct passwd pw, *res = NULL;
	char pwbuf[4096];
	if (reader.set)
		snprintf(buf, len, "%s", reader.name);
	else if (getpwuid_r(geteuid(), &pw, pwbuf, sizeof pwbuf, &res) == 0 && res)
		snprintf(buf, len, "%s", pw.pw_name);
	else
		snprintf(buf, len, "uid %u", (unsigned)geteuid());
	return buf;
}

int secret_mode_check(const char *file, const struct stat *st, char *err, size_t errlen)
{
	unsigned mode = (unsigned)(st->st_mode & 07777);
	char grp[64], who[64];

	if (mode & 022) {
		snprintf(err, errlen,
			 "%s is writable by group or others (mode %04o); run: chmod 600 %s (or 640 "
			 "with the service's group)",
			 file, mode, file);
		return -1;
	}
	if (mode & 007) {
		snprintf(err, errlen,
			 "%s is readable by others (mode %04o); run: chmod 600 %s (or 640 with the "
			 "service's group)",
			 file, mode, file);
		return -1;
	}
	if ((mode & 070) && !reader_in_group(st->st_gid)) {
		group_name(st->st_gid, grp, sizeof grp);
		snprintf(
		    err, errlen,
		    "%s is readable by group %s, which %s is not in (mode %04o); run: chmod 600 "
		    "%s, or chgrp to the service's group%s",
		    file, grp, reader_label(who, sizeof who), mode, file,
		    !reader.set && geteuid() == 0
			? " (as root, check-config --user NAME judges for the service's user)"
			: "");
		return -1;
	}
	if (reader.set && !(st->st_uid == reader.uid ? mode & 0400 : mode & 0040)) {
		group_name(st->st_gid, grp, sizeof grp);
		snprintf(err, errlen,
			 "%s cannot be read by %s (owner uid %u, group %s, mode %04o); run: chown "
			 "%s %s, or chgrp %s's group and chmod 640",
			 file, reader.name, (unsigned)st->st_uid, grp, mode, reader.name, file,
			 reader.name);
		return -1;
	}
	return 0;
}

/* Reads up to SECRET_MAX bytes of a private file. */
static int secret_file_read(const char *file, struct buf *b, char *err, size_t errlen)
{
	struct stat st;
	char chunk[4096];
	int fd = open(file, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		snprintf(err, errlen, "cannot open %s: %s", file, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s is not a regular file", file);
		close(fd);
		return -1;
	}
	if (secret_mode_check(file, &st, err, errlen) < 0) {
		close(fd);
		return -1;
	}
	for (;;) {
		ssize_t n = read(fd, chunk, sizeof chunk);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			snprintf(err, errlen, "cannot read %s: %s", file, strerror(errno));
			close(fd);
			return -1;
		}
		if (n == 0)
			break;
		if (b->len + (size_t)n > SECRET_MAX) {
			snprintf(err, errlen, "%s is larger than %d bytes; is it the right file?",
				 file, SECRET_MAX);
			close(fd);
			return -1;
		}
		buf_append(b, chunk, (size_t)n);
	}
	close(fd);
	return 0;
}

/* First line of s, control characters replaced, into out. */
static void first_line(const char *s, size_t len, char *out, size_t outlen)
{
	size_t o = 0;
	for (size_t i = 0; i < len && s[i] != '\n' && o + 1 < outlen; i++)
		out[o++] = (unsigned char)s[i] < ' ' || s[i] == 0x7f ? ' ' : s[i];
	out[o] = 0;
}

/* Runs command (argv split on whitespace, no shell), stdout into b. */
static int secret_command_run(const char *command, struct buf *b, char *err, size_t errlen)
{
	struct strlist args = {0};
	char *copy = xstrdup(command), *save = NULL;
	int out[2] = {-1, -1}, errp[2] = {-1, -1}, rc = -1, status;
	posix_spawn_file_actions_t fa;
	struct buf eb;
	pid_t pid;

	buf_init(&eb);
	for (char *t = strtok_r(copy, " \t", &save); t; t = strtok_r(NULL, " \t", &save))
		strlist_add(&args, t);
	free(copy);
	if (!args.n) {
		snprintf(err, errlen, "the command is empty");
		return -1;
	}
	if (pipe2(out, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0) {
		snprintf(err, errlen, "cannot create a pipe: %s", strerror(errno));
		goto done;
	}
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, out[1], 1);
	posix_spawn_file_actions_adddup2(&fa, errp[1], 2);
	int e = posix_spawnp(&pid, args.v[0], &fa, NULL, args.v, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(out[1]);
	close(errp[1]);
	out[1] = errp[1] = -1;
	if (e != 0) {
		snprintf(err, errlen, "cannot run %s: %s", args.v[0], strerror(e));
		goto done;
	}

	double deadline = now_monotonic() + SECRET_COMMAND_TIMEOUT;
	int too_big = 0, timed_out = 0;
	struct pollfd pf[2] = {{.fd = out[0], .events = POLLIN}, {.fd = errp[0], .events = POLLIN}};
	while (pf[0].fd >= 0 || pf[1].fd >= 0) {
		int left = (int)((deadline - now_monotonic()) * 1000);
		if (left <= 0) {
			timed_out = 1;
			break;
		}
		int n = poll(pf, 2, left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			break;
		for (int i = 0; i < 2; i++) {
			char chunk[4096];
			if (pf[i].fd < 0 || !pf[i].revents)
				continue;
			ssize_t r = read(pf[i].fd, chunk, sizeof chunk);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0) {
				pf[i].fd = -1;
				continue;
			}
			struct buf *dst = i == 0 ? b : &eb;
			if (dst->len + (size_t)r > SECRET_MAX) {
				too_big = i == 0;
				continue; /* drain without keeping */
			}
			buf_append(dst, chunk, (size_t)r);
		}
	}
	if (timed_out)
		kill(pid, SIGKILL);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (timed_out) {
		snprintf(err, errlen, "%s did not finish within %d s", args.v[0],
			 SECRET_COMMAND_TIMEOUT);
	} else if (too_big) {
		snprintf(err, errlen, "%s printed more than %d bytes", args.v[0], SECRET_MAX);
	} else if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
		char line[200];
		first_line(eb.data ? eb.data : "", eb.len, line, sizeof line);
		snprintf(err, errlen, "%s exited with status %d%s%s", args.v[0],
			 WEXITSTATUS(status), *line ? ": " : "", line);
	} else if (WIFSIGNALED(status)) {
		snprintf(err, errlen, "%s was killed by signal %d", args.v[0], WTERMSIG(status));
	} else {
		rc = 0;
	}
done:
	for (int i = 0; i < 2; i++) {
		if (out[i] >= 0)
			close(out[i]);
		if (errp[i] >= 0)
			close(errp[i]);
	}
	buf_free(&eb);
	strlist_free(&args);
	return rc;
}

int secret_read(const char *file, const char *command, char **out, char *err, size_t errlen)
{
	struct buf b;

	*out = NULL;
	if (!file == !command) {
		snprintf(err, errlen, "exactly one of a secret file or command is needed");
		return -1;
	}
	buf_init(&b);
	if ((file ? secret_file_read(file, &b, err, errlen)
		  : secret_command_run(command, &b, err, errlen)) < 0) {
		buf_free(&b);
		return -1;
	}
	if (b.len && memchr(b.data, 0, b.len)) {
		snprintf(err, errlen, "%s holds a NUL byte; it must be text",
			 file ? file : "the command's output");
		buf_free(&b);
		return -1;
	}
	while (b.len && (b.data[b.len - 1] == '\n' || b.data[b.len - 1] == '\r'))
		b.data[--b.len] = 0;
	*out = buf_steal(&b);
	return 0;
}

int secret_read_raw(const char *file, unsigned char **out, size_t *len, char *err, size_t errlen)
{
	struct buf b;

	*out = NULL;
	*len = 0;
	buf_init(&b);
	if (secret_file_read(file, &b, err, errlen) < 0) {
		buf_free(&b);
		return -1;
	}
	if (b.len < GATEWAY_SECRET_MIN) {
		snprintf(err, errlen,
			 "%s holds %zu bytes, needs at least %d random bytes; create it with: "
			 "head -c 32 /dev/urandom > %s",
			 file, b.len, GATEWAY_SECRET_MIN, file);
		buf_free(&b);
		return -1;
	}
	*len = b.len;
	*out = (unsigned char *)buf_steal(&b);
	return 0;
}
