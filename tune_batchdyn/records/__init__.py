"""Per-epoch trajectory records: one schema, read and written everywhere (numpy/pandas only).

A *record* is one epoch of one trial (``RECORD_COLUMNS``); a *records table* is many trials'
records with ``trial_id``, ``config/<field>`` columns, ``final_test_error``, ``final_val_error``
and ``budget_fraction`` (see ``records.table``). Tables come from ``run_trial`` output
(``trial_table``), a Ray Tune experiment directory (``records_from_ray_dir``) or an Optuna study
(``records_from_optuna``; the user-attribute convention is in ``records.optuna_import``), and are
stored as Parquet or CSV (``read_records``, ``write_records``, ``append_records``: atomic).
"""

from tune_batchdyn.records.io import append_records, read_records, records_format, write_records
from tune_batchdyn.records.optuna_import import (
    CONFIG_ATTR,
    RECORD_ATTR_PREFIX,
    REPEAT_ATTR,
    record_attr_name,
    record_user_attr,
    records_from_optuna,
)
from tune_batchdyn.records.ray_import import records_from_ray_dir
from tune_batchdyn.records.schema import (
    BOOL_COLUMNS,
    CONFIG_PREFIX,
    INT_COLUMNS,
    RECORD_COLUMNS,
    TABLE_EXTRA_COLUMNS,
    empty_record,
    target_column,
)
from tune_batchdyn.records.table import (
    concat_tables,
    config_columns,
    empty_table,
    flatten_config,
    normalise_table,
    trial_table,
    validate_table,
)

__all__ = [
    "BOOL_COLUMNS",
    "CONFIG_ATTR",
    "CONFIG_PREFIX",
    "INT_COLUMNS",
    "RECORD_ATTR_PREFIX",
    "RECORD_COLUMNS",
    "REPEAT_ATTR",
    "TABLE_EXTRA_COLUMNS",
    "append_records",
    "concat_tables",
    "config_columns",
    "empty_record",
    "empty_table",
    "flatten_config",
    "normalise_table",
    "read_records",
    "record_attr_name",
    "record_user_attr",
    "records_format",
    "records_from_optuna",
    "records_from_ray_dir",
    "target_column",
    "trial_table",
    "validate_table",
    "write_records",
]
