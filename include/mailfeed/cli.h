/* cli.h — the sub-commands of `mailfeed`.  Each returns the process exit
 * code: 0 success, 1 runtime failure, 2 usage or configuration error.
 * argv[0] is the sub-command name; config is the -c path (never NULL). */
#ifndef MAILFEED_CLI_H
#define MAILFEED_CLI_H

int cmd_check_config(int argc, char **argv, const char *config);
int cmd_run(int argc, char **argv, const char *config);
int cmd_status(int argc, char **argv, const char *config);
int cmd_dead(int argc, char **argv, const char *config);
int cmd_backfill(int argc, char **argv, const char *config);
int cmd_inspect(int argc, char **argv, const char *config);
int cmd_preview(int argc, char **argv, const char *config);
int cmd_digest(int argc, char **argv, const char *config);
int cmd_subscribe(int argc, char **argv, const char *config);
int cmd_unsubscribe(int argc, char **argv, const char *config);
int cmd_migrate_state(int argc, char **argv, const char *config);
/* Hidden: the sandboxed MIME parse worker (spawned by the daemon). */
int cmd_parse_worker(int argc, char **argv, const char *config);

/* Loads the config for a command, printing every problem to stderr.
 * NULL means exit 2. */
struct mf_config;
struct mf_config *cli_load_config(const char *path);
/* Opens the state database of cfg for a command, printing why not to
 * stderr.  NULL means exit 1. */
struct store;
struct store *cli_open_store(const struct mf_config *cfg);

#endif
