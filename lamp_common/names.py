"""Free text that other people's tools read: a name must not start like a spreadsheet formula.

Runs, accounts and sweeps are listed in tables a researcher downloads as CSV (the dashboard's tables offer it); a
cell that starts with `=`, `+`, `-` or `@` is run as a formula when that file is opened in a spreadsheet.
"""

from __future__ import annotations

from lamp_common.errors import LampError

FORMULA_STARTS = ("=", "+", "-", "@")


def refuse_formula(value: str, field: str) -> str:
    """`value` unchanged, or LampError naming `field` when it starts like a spreadsheet formula."""
    if value.startswith(FORMULA_STARTS):
        raise LampError(f"{field}: {value!r} starts with {value[0]!r}, which a spreadsheet runs as a formula; "
                        "start it with a letter, a digit or another character")
    return value
