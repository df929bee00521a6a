/* sandbox.c — the parse worker's confinement: descriptors, namespaces and
 * the seccomp allow-list (see sandbox.h for the contract).
 *
 * The allow-list is the table `allowed` below: one row per system call and
 * argument condition.  It was taken from what the worker does while it
 * parses the test corpora (strace -f), and is kept to that; a new library
 * in the parser adds its rows here and loads its files in
 * sandbox_preload(). */
#include <errno.h>
#include <fcntl.h>
#include <iconv.h>
#include <linux/sched.h>
#include <sched.h>
#include <seccomp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "mailfeed/log.h"
#include "mailfeed/mime.h"
#include "mailfeed/sandbox.h"
#include "mailfeed/util.h"

#if defined(__SANITIZE_ADDRESS__)
#define SANDBOX_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANDBOX_ASAN 1
#endif
#endif

/* Charsets whose converters are loaded before the sandbox: what mail is
 * commonly written in, and every name the MIME layer maps labels to.  A
 * converter not loaded here cannot be loaded later (its file cannot be
 * opened), and text in that charset is read as windows-1252. */
static const char *const preload_charsets[] = {
    "WINDOWS-1252", "ISO-8859-1",   "ISO-8859-2",   "ISO-8859-3",   "ISO-8859-4",   "ISO-8859-5",
    "ISO-8859-6",   "ISO-8859-7",   "ISO-8859-8",   "ISO-8859-9",   "ISO-8859-10",  "ISO-8859-13",
    "ISO-8859-14",  "ISO-8859-15",  "ISO-8859-16",  "WINDOWS-1250", "WINDOWS-1251", "WINDOWS-1253",
    "WINDOWS-1254", "WINDOWS-1255", "WINDOWS-1256", "WINDOWS-1257", "WINDOWS-1258", "KOI8-R",
    "KOI8-U",	    "CP850",	    "CP866",	    "CP874",	    "MACINTOSH",    "UTF-7",
    "UTF-16",	    "UTF-16LE",	    "UTF-16BE",	    "UTF-32",	    "UTF-32LE",	    "UTF-32BE",
    "UCS-2",	    "GB18030",	    "GBK",	    "HZ-GB-2312",   "BIG5",	    "BIG5-HKSCS",
    "EUC-TW",	    "CP932",	    "SHIFT_JIS",    "EUC-JP",	    "ISO-2022-JP",  "ISO-2022-JP-2",
    "CP949",	    "EUC-KR",	    "ISO-2022-KR",  "TIS-620",	    "VISCII",
};

/* Kept open for the life of the worker: glibc unloads a converter some
 * time after its last descriptor is closed. */
static iconv_t preloaded[sizeof preload_charsets / sizeof preload_charsets[0]];

void sandbox_preload(void)
{
	/* the MIME library: its types registered and tables filled */
	mime_init();
	/* the local time zone (/etc/localtime), read once and cached */
	tzset();
	time_t t = time(NULL);
	struct tm tm;
	localtime_r(&t, &tm);
	/* OpenSSL reads its configuration on first use */
	char h[65];
	sha256_hex("", 0, h);
	for (size_t i = 0; i < sizeof preload_charsets / sizeof preload_charsets[0]; i++)
		preloaded[i] = iconv_open("UTF-8", preload_charsets[i]);
	/* GMime's types and tables, set up on a sample message */
	mime_init();
}

/* Every descriptor above stderr is closed: the worker inherits nothing by
 * accident, whatever a library opened while loading. */
static void close_others(void)
{
	if (syscall(SYS_close_range, 3U, ~0U, 0U) == 0)
		return;
	long max = sysconf(_SC_OPEN_MAX);
	for (long fd = 3; fd < (max > 0 && max < 65536 ? max : 65536); fd++)
		close((int)fd);
}

/* New user, mount and network namespaces: no network devices, no view of
 * the mounts or IPC of the host, and no privilege over anything outside.
 * Not permitted in every environment (a unit with RestrictNamespaces=, a
 * container, a kernel without unprivileged user namespaces): the seccomp
 * filter alone confines the worker then. */
static void enter_namespaces(void)
{
	if (unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC) == 0) {
		log_debug("parse_worker.sandbox namespaces=user,mount,network,ipc");
		return;
	}
	log_debug("parse_worker.sandbox namespaces=none reason=%s", LOG_Q(strerror(errno)));
}

/* One row of the allow-list: a system call, and up to two conditions on
 * its arguments that must all hold. */
struct allow {
	int nr;
	unsigned n_args;
	struct scmp_arg_cmp args[2];
};

#define ANY(call)                                                                                  \
	{                                                                                          \
		.nr = SCMP_SYS(call)                                                               \
	}
#define IF1(call, a)                                                                               \
	{                                                                                          \
		.nr = SCMP_SYS(call), .n_args = 1, .args = { a }                                   \
	}
#define IF2(call, a, b)                                                                            \
	{                                                                                          \
		.nr = SCMP_SYS(call), .n_args = 2, .args = { a, b }                                \
	}

static const struct allow allowed[] = {
    /* the socket to the daemon: 0 to read messages, 1 to answer */
    IF1(read, SCMP_A0(SCMP_CMP_EQ, 0)),
    IF1(recvfrom, SCMP_A0(SCMP_CMP_EQ, 0)),
    IF1(write, SCMP_A0(SCMP_CMP_EQ, 1)),
    /* the log pipe; isatty(2) when a line is logged */
    IF1(write, SCMP_A0(SCMP_CMP_EQ, 2)),
    IF2(ioctl, SCMP_A0(SCMP_CMP_EQ, 2), SCMP_A1(SCMP_CMP_EQ, TCGETS)),
    /* memory, never executable */
    IF1(mmap, SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0)),
    ANY(munmap),
    ANY(mremap),
    ANY(brk),
    /* the CPU limit, moved as messages are parsed */
    ANY(getrusage),
    IF2(prlimit64, SCMP_A0(SCMP_CMP_EQ, 0), SCMP_A1(SCMP_CMP_EQ, RLIMIT_CPU)),
    IF1(setrlimit, SCMP_A0(SCMP_CMP_EQ, RLIMIT_CPU)),
    /* clocks (when the vDSO cannot answer), locks, signal return, leaving */
    ANY(clock_gettime),
    ANY(futex),
    ANY(rt_sigreturn),
    ANY(exit),
    ANY(exit_group),
#ifdef SANDBOX_ASAN
    /* what the AddressSanitizer runtime does while a sanitized build runs
     * and when it reports an error (then exits with status 1) */
    ANY(madvise),
    ANY(getpid),
    ANY(gettid),
    ANY(sched_yield),
    ANY(sigaltstack),
    ANY(rt_sigaction),
    ANY(rt_sigprocmask),
    IF1(mprotect, SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0)),
    ANY(readlink),
#endif
};

/* Calls that fail with EACCES instead of killing: a library that looks
 * for an optional file (an unknown charset's converter) goes on without. */
static const int denied_softly[] = {
    SCMP_SYS(open),
    SCMP_SYS(openat),
};

int sandbox_enter(char *err, size_t errlen)
{
	/* the first to go when memory runs out, before the daemon */
	int adj = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
	if (adj >= 0) {
		if (write(adj, "1000", 4) != 4)
			log_debug("parse_worker.sandbox oom_score_adj=unchanged");
		close(adj);
	}
	/* no core dumps, no ptrace by the same user, no /proc/PID/mem */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	close_others();
	enter_namespaces();

	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_KILL_PROCESS);
	if (!ctx) /* where seccomp() itself is filtered: prctl, and the
		   * older action, which kills our one thread — the process */
		ctx = seccomp_init(SCMP_ACT_KILL);
	if (!ctx) {
		snprintf(err, errlen, "cannot create the seccomp filter");
		return -1;
	}
	int rc = 0;
	for (size_t i = 0; i < sizeof allowed / sizeof allowed[0] && rc == 0; i++)
		rc = seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, allowed[i].nr, allowed[i].n_args,
					    allowed[i].args);
	for (size_t i = 0; i < sizeof denied_softly / sizeof denied_softly[0] && rc == 0; i++)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EACCES), denied_softly[i], 0);
	if (rc == 0)
		rc = seccomp_load(ctx);
	seccomp_release(ctx);
	if (rc != 0) {
		snprintf(err, errlen, "cannot install the seccomp filter: %s", strerror(-rc));
		return -1;
	}
	return 0;
}
