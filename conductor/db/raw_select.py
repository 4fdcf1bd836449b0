"""A SELECT compiled once and run straight on a pooled DBAPI cursor.

For the one statement a fleet runs all the time (the Omaha update check's read of its
instance, conductor/db/updates.py): SQLAlchemy's per-execution work (connection
wrapper, begin/commit, execution context, result object) cost ~75 us of CPU per check,
about three times the read itself (~25 us; bench/omaha.py, docs/architecture.md).
The statement is still written and compiled by SQLAlchemy for the engine's dialect,
its rows still go through the same result processors (SQLite's stored timestamps
become the same datetimes), the connection still comes from the engine's pool (with
its pre-ping and its rollback on return), and a driver error becomes the same
``sqlalchemy.exc.DBAPIError`` subclass. Only plain parameters (strings, integers:
types without a bind processor) are accepted, which the constructor checks.
"""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa


class RawSelect:
    """``first(**params)``: the first row as a dict of column name -> value, or None."""

    def __init__(self, engine: sa.Engine, statement: sa.Select[Any]):
        dialect = engine.dialect
        self.engine = engine
        self._compiled = statement.compile(dialect=dialect)
        self._sql = self._compiled.string
        for name, bind in self._compiled.binds.items():
            if bind.type.dialect_impl(dialect).bind_processor(dialect) is not None:
                raise ValueError(f"parameter {name!r} needs a bind processor")
        columns = list(statement.selected_columns)
        self._names = tuple(str(c.key) for c in columns)
        self._processors = tuple(
            c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns)
        self._dbapi_error = dialect.loaded_dbapi.Error

    def _parameters(self, params: dict[str, Any]) -> Any:
        values = self._compiled.construct_params(params)
        if self._compiled.positiontup is not None:
            return tuple(values[name] for name in self._compiled.positiontup)
        return values

    def first(self, **params: Any) -> dict[str, Any] | None:
        parameters = self._parameters(params)
        connection = self.engine.raw_connection()
        try:
            cursor = connection.cursor()
            try:
                cursor.execute(self._sql, parameters)
                row = cursor.fetchone()
            finally:
                cursor.close()
        except self._dbapi_error as exc:
            raise sa.exc.DBAPIError.instance(self._sql, parameters, exc,
                                             self._dbapi_error) from exc
        finally:
            connection.close()   # back to the pool, which rolls back what is open
        if row is None:
            return None
        return {name: value if process is None else process(value)
                for name, value, process in zip(self._names, row, self._processors)}
