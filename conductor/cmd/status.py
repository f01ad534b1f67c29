# SPDX-License-Identifier: Apache-2.0
"""``conductor-status upgrade check``: is this deployment ready to run
this release? (oslo.upgradecheck)

Run it with the new release installed, before restarting the conductors,
against the configuration they use::

    conductor-status --config-file /etc/conductor/conductor.conf upgrade check

Exit codes (oslo.upgradecheck's): 0 every check passed, 1 a warning
(worth reading, not blocking), 2 a failure (fix it before the upgrade),
255 the check itself could not run.
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

import conductor.cmd  # noqa: F401  (backend first: see the package doc)

from oslo_config import cfg
from oslo_upgradecheck import upgradecheck
import sqlalchemy as sa

from conductor import checks
from conductor.common import exceptions
from conductor.common import version
from conductor import conf as conductor_conf
from conductor.conf import validate
from conductor.db import engine as db_engine
from conductor.db import migration
from conductor.db import models
from conductor import reports

Code = upgradecheck.Code
Result = upgradecheck.Result

#: Oldest database server versions the conductor is tested with.
MIN_VERSIONS = {"sqlite": (3, 31), "mysql": (8, 0), "mariadb": (10, 6),
                "postgresql": (13, 0)}

#: Options of earlier releases that are gone: ``(group, name): advice``.
#: Renamed options keep working under their old name (oslo.config's
#: ``deprecated_name``) and are reported by oslo.config itself.
REMOVED_OPTIONS: dict[tuple[str, str], str] = {}


class Checks(upgradecheck.UpgradeCommands):
    """The conductor's upgrade checks; each returns one Result."""

    display_title = "conductor upgrade check"

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        self.conf = conf
        self._engine: sa.Engine | None = None

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            self._engine = db_engine.create_engine(
                self.conf.database.connection, create_sqlite=False)
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

    def _not_created(self) -> Result | None:
        """The result for an SQLite file that does not exist yet, or None.

        Nothing here creates it: the default file is created at the
        conductor's first start (which passes); any other missing path is
        likely a typo (a warning).
        """
        url = self.conf.database.connection
        path = db_engine.sqlite_file(url)
        if path is None or os.path.exists(path):
            return None
        default = conductor_conf.database.DEFAULT_CONNECTION.replace(
            "$state_path", self.conf.state_path)
        if url == default:
            return Result(Code.SUCCESS, "no database yet: the conductor "
                          "creates %s at its first start" % path)
        return Result(Code.WARNING, "there is no database file %s: check "
                      "[database] connection (the conductor would start on "
                      "a new, empty database there)" % path)

    def _database_version(self) -> Result:
        missing = self._not_created()
        if missing is not None:
            return missing
        try:
            with self.engine.connect() as connection:
                name = self.engine.dialect.name
                raw = connection.dialect.server_version_info or ()
                text = ".".join(str(part) for part in raw)
                if name == "mysql" and "mariadb" in str(
                        connection.exec_driver_sql(
                            "SELECT VERSION()").scalar()).lower():
                    name = "mariadb"
        except Exception as exc:
            return Result(Code.FAILURE, "cannot reach the database %s: %s"
                          % (db_engine.mask_url(
                              self.conf.database.connection),
                             db_engine.reason(exc)))
        minimum = MIN_VERSIONS.get(name)
        found = tuple(part for part in raw if isinstance(part, int))
        if minimum is None:
            return Result(Code.WARNING, "%s %s is not a database the "
                          "conductor is tested with (SQLite, MariaDB, MySQL, "
                          "PostgreSQL)" % (name, text))
        if found[:len(minimum)] < minimum:
            return Result(Code.FAILURE, "%s %s is older than %s, the oldest "
                          "supported" % (name, text,
                                         ".".join(map(str, minimum))))
        return Result(Code.SUCCESS, "%s %s" % (name, text))

    def _schema(self) -> Result:
        missing = self._not_created()
        if missing is not None:
            return missing
        head = migration.head()
        try:
            current = migration.current(self.engine)
        except Exception as exc:
            return Result(Code.FAILURE, "cannot read the schema revision: %s"
                          % db_engine.reason(exc))
        if current is None:
            return Result(Code.SUCCESS, "empty database: the conductor "
                          "creates the schema (revision %s) when it starts, "
                          "or run 'conductor-manage db sync'" % head)
        if current == head:
            return Result(Code.SUCCESS, "schema at revision %s (head)"
                          % head)
        known = migration.known_revisions()
        if current not in known:
            return Result(Code.FAILURE, "schema revision %s is unknown to "
                          "this release (head %s): the database was "
                          "upgraded by a newer release" % (current, head))
        return Result(Code.FAILURE, "schema revision %s is older than this "
                      "release's %s: run 'conductor-manage db sync' before "
                      "starting the new conductors" % (current, head))

    def _partitions(self) -> Result:
        if self._not_created() is not None:
            return Result(Code.SUCCESS, "not applicable: no database yet")
        try:
            columns = {column["name"] for column in
                       sa.inspect(self.engine).get_columns("nodes")}
        except sa.exc.NoSuchTableError:
            return Result(Code.SUCCESS, "not applicable: no nodes table yet")
        except Exception as exc:
            return Result(Code.FAILURE, "cannot read the nodes table: %s"
                          % db_engine.reason(exc))
        if "partition" not in columns:
            return Result(Code.SUCCESS, "not applicable: this schema has no "
                          "nodes.partition column")
        # NOTE: PARTITION is a reserved word of MySQL: let SQLAlchemy quote.
        # A stored partition that is not the node's own (a row written
        # around the conductor, or a gap in a migration) would route the
        # node to the wrong worker: every row is checked, in batches.
        nodes = sa.table("nodes", sa.column("uuid"), sa.column("partition"))
        query = sa.select(nodes.c.uuid, nodes.c.partition)
        wrong: list[str] = []
        total = 0
        with self.engine.connect() as connection:
            result = connection.execution_options(
                stream_results=True).execute(query)
            for rows in result.partitions(5000):
                for uuid, partition in rows:
                    total += 1
                    if partition != models.partition_of(uuid):
                        wrong.append(uuid)
        if wrong:
            return Result(Code.FAILURE, "%d of %d node(s) have a partition "
                          "that is not their own (e.g. %s): run "
                          "'conductor-manage db sync', or set nodes.partition"
                          " only through the conductor"
                          % (len(wrong), total, ", ".join(wrong[:3])))
        return Result(Code.SUCCESS, "every node has its partition (%d checked)"
                      % total)

    def _options(self) -> Result:
        try:
            # NOTE: the values the conductor would refuse at start.
            checks.check_option_values(self.conf)
        except exceptions.ConductorException as exc:
            return Result(Code.FAILURE, str(exc))
        problems = [str(problem) for problem in
                    validate.unknown_options(self.conf)]
        problems += validate.deprecated_options(self.conf)
        for (group, name), advice in sorted(REMOVED_OPTIONS.items()):
            for path in validate.config_files(self.conf):
                if validate.file_sets(path, group, name):
                    problems.append("%s: [%s] %s was removed: %s"
                                    % (path, group, name, advice))
        if problems:
            return Result(Code.WARNING, "; ".join(problems))
        return Result(Code.SUCCESS, "no unknown, removed or misspelled "
                      "option in %s" % (", ".join(
                          validate.config_files(self.conf)) or
                          "the configuration (no file)"))

    _upgrade_checks = (
        ("Database version", _database_version),
        ("Database schema", _schema),
        ("Node partitions", _partitions),
        ("Configuration options", _options),
    )


def main(argv: Sequence[str] | None = None) -> int:
    conf = conductor_conf.CONF
    reports.register_opts(conf)
    commands = Checks(conf)
    upgradecheck.register_cli_options(conf, commands)
    try:
        conf(list(sys.argv[1:] if argv is None else argv),
             project="conductor", prog="conductor-status",
             version=version.version_string())
    except checks.CONFIG_ERRORS as exc:
        return _error(checks.config_error(exc))
    # NOTE: oslo.upgradecheck reads --json from its module-level CONF.
    upgradecheck.CONF = conf
    try:
        return int(upgradecheck.run(conf))
    finally:
        commands.close()


def _error(message: str) -> int:
    sys.stderr.write("conductor-status: ERROR: %s\n" % message)
    return 2


if __name__ == "__main__":
    sys.exit(main())
