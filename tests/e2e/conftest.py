from tests.support.fixtures import (  # noqa: F401  (fixtures)
    clock,
    db_url,
    notifier,
    postgres_database,
    sqlite_template,
    store,
)
