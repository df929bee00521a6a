/* test_secret_command.c — what a token command prints on its standard
 * output is a secret: whatever goes wrong (a failing exit status, a signal,
 * too much output, a NUL byte), the error that reaches the log names the
 * command and why, and never copies that output. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "mailfeed/config.h"
#include "mailfeed/secret.h"

#define TOKEN "ya29.tok-3f9a1c2e7b"

static char script_dir[] = "/tmp/mf-token-XXXXXX";

/* A shell script in script_dir; its path (static). */
static const char *script(const char *name, const char *body)
{
	static char path[256];
	snprintf(path, sizeof path, "%s/%s", script_dir, name);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fprintf(f, "#!/bin/sh\n%s\n", body);
	fclose(f);
	assert_int_equal(chmod(path, 0700), 0);
	return path;
}

static void fails_without_token(const char *name, const char *body, const char *expect)
{
	char err[512] = "", *out = NULL;
	assert_int_equal(secret_read(NULL, script(name, body), &out, err, sizeof err), -1);
	assert_null(out);
	assert_non_null(strstr(err, name));
	assert_non_null(strstr(err, expect));
	assert_null(strstr(err, "ya29"));
}

static void test_failing_command(void **state)
{
	fails_without_token("exit3", "echo " TOKEN "; echo 'not logged in' >&2; exit 3",
			    "exited with status 3: not logged in");
}

static void test_killed_command(void **state)
{
	fails_without_token("killed", "echo " TOKEN "; kill -9 $$", "killed by signal 9");
}

static void test_too_much_output(void **state)
{
	fails_without_token("chatty",
			    "i=0; while [ $i -lt 5000 ]; do echo " TOKEN TOKEN TOKEN "; "
			    "i=$((i+1)); done",
			    "printed more than");
}

static void test_nul_byte(void **state)
{
	char err[512] = "", *out = NULL;
	assert_int_equal(
	    secret_read(NULL, script("nul", "printf '" TOKEN "\\000x'"), &out, err, sizeof err),
	    -1);
	assert_null(out);
	assert_null(strstr(err, "ya29"));
}

static void test_good_command(void **state)
{
	char err[512] = "", *out = NULL;
	assert_int_equal(secret_read(NULL, script("good", "echo " TOKEN), &out, err, sizeof err),
			 0);
	assert_string_equal(out, TOKEN);
	free(out);
}

static int setup(void **state) { return mkdtemp(script_dir) ? 0 : -1; }

static int teardown(void **state)
{
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", script_dir);
	return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_failing_command), cmocka_unit_test(test_killed_command),
	    cmocka_unit_test(test_too_much_output), cmocka_unit_test(test_nul_byte),
	    cmocka_unit_test(test_good_command),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
